#!/usr/bin/env bash
# Run the eight notebooks (notebooks/01-…08-*.ipynb) headless, in order, on data-samples/ with the
# local backend, sharing one work folder; the executed copies go to runs/<time>/ (or --out DIR).
# Stops at the first notebook that fails (exit 1; its executed copy shows the error) and always
# stops the prediction server notebook 07 starts.
#
#   scripts/run-notebooks.sh [--out DIR] [-p NAME VALUE]...   # -p goes to the notebooks declaring NAME
#
# Needs node_modules (npm ci) and nothing else: the runner starts the project's own tslab kernel, no
# Jupyter or registered kernelspec required (kernel-setup.sh is for opening the notebooks in Jupyter).
set -euo pipefail
cd "$(dirname "$0")/.."

out="runs/$(date +%Y%m%d-%H%M%S)"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "run-notebooks: --out needs a folder" >&2; exit 2; }; out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi
if [ ! -f dist/lib/notebook.js ] || [ -n "$(find lib -name '*.ts' -newer dist/lib/notebook.js 2>/dev/null | head -1)" ]; then
  npm run build
fi

work="$out/work"
mkdir -p "$work"
# The suite undeploys at its end too; this also covers the node process itself dying.
trap 'node dist/lib/cli.js undeploy --work_dir "$work" >/dev/null 2>&1 || true' EXIT
# port 0: any free port, so a server already on 8501 (or a parallel run) does not collide.
node dist/lib/cli.js run-notebooks --out "$out" --work_dir "$work" -p port 0 -p undeploy true ${args[@]+"${args[@]}"}
