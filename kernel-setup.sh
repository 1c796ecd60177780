#!/usr/bin/env bash
# Make this project's notebooks runnable in Jupyter on a Debian machine: install Jupyter from apt
# (only what is missing), the project's node packages (only if node_modules is missing), and register
# the project's tslab as the Jupyter kernel "tslab". Safe to run again.
#
#   ./kernel-setup.sh                 # kernelspec in the user's Jupyter data dir
#   ./kernel-setup.sh --prefix DIR    # kernelspec in DIR/share/jupyter/kernels/tslab
#                                     # (then use JUPYTER_PATH=DIR/share/jupyter)
#
# The kernel.json is written directly: `tslab install` would need IPython, which Debian's Jupyter
# packages don't pull in.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=""
# libdnnl-dev, g++ and make: `npm ci` builds the oneDNN training kernels with them (4x faster training).
APT_PACKAGES=(jupyter-client jupyter-nbconvert python3-nbclient python3-nbformat jupyter-notebook fonts-dejavu-core
  libdnnl-dev g++ make)

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  echo "kernel-setup: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# --- Debian packages, only the missing ones -------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and apt-get is not available; install them by hand"
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null; then
    SUDO=(sudo)
  else
    die "missing ${missing[*]}; run this script as root, or install them: apt-get install ${missing[*]}"
  fi
  echo "installing ${missing[*]}"
  "${SUDO[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "apt packages: all present"
fi

# --- node packages --------------------------------------------------------------------------------
command -v node >/dev/null || die "node is not installed; install Node.js 20 or later first"
if [ ! -d "$ROOT/node_modules" ]; then
  command -v npm >/dev/null || die "npm is not installed; it comes with Node.js"
  echo "installing node packages (npm ci)"
  (cd "$ROOT" && npm ci)
else
  echo "node_modules: present"
fi
TSLAB="$ROOT/node_modules/.bin/tslab"
[ -x "$TSLAB" ] || die "$TSLAB is missing; run 'npm ci' in $ROOT"

# --- kernelspec -----------------------------------------------------------------------------------
if [ -n "$PREFIX" ]; then
  mkdir -p "$PREFIX"
  DATA_DIR="$(cd "$PREFIX" && pwd)/share/jupyter"
elif [ -n "${JUPYTER_DATA_DIR:-}" ]; then
  DATA_DIR="$JUPYTER_DATA_DIR"
else
  DATA_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/jupyter"
fi
KERNEL_DIR="$DATA_DIR/kernels/tslab"
mkdir -p "$KERNEL_DIR"
# node writes the JSON so any character in the path is escaped properly.
NEW_JSON="$(TSLAB="$TSLAB" node -e '
  const spec = {
    argv: [process.env.TSLAB, "kernel", "--config-path", "{connection_file}"],
    display_name: "TypeScript (tslab)",
    language: "typescript",
  };
  process.stdout.write(JSON.stringify(spec, null, 1) + "\n");
')"
if [ -f "$KERNEL_DIR/kernel.json" ] && [ "$(cat "$KERNEL_DIR/kernel.json")" = "$NEW_JSON" ]; then
  echo "kernelspec tslab: unchanged in $KERNEL_DIR"
else
  printf '%s\n' "$NEW_JSON" > "$KERNEL_DIR/kernel.json.tmp"
  mv "$KERNEL_DIR/kernel.json.tmp" "$KERNEL_DIR/kernel.json"
  echo "kernelspec tslab: written to $KERNEL_DIR/kernel.json"
fi

# --- check that Jupyter sees it -------------------------------------------------------------------
if command -v jupyter >/dev/null; then
  JUPYTER=(jupyter)
else
  JUPYTER=(/usr/bin/python3 -m jupyter)
fi
export JUPYTER_PATH="$DATA_DIR${JUPYTER_PATH:+:$JUPYTER_PATH}"
# PYDEVD_…: silences a debugger warning some Python builds print on every start.
if ! LISTING="$(PYDEVD_DISABLE_FILE_VALIDATION=1 "${JUPYTER[@]}" kernelspec list 2>&1)"; then
  die "'${JUPYTER[*]} kernelspec list' failed: $LISTING"
fi
echo "$LISTING"
# jupyter may print the path through a symlink or with a trailing slash: compare the name and folder name.
if ! grep -Eq "^\s*tslab\s+.*/kernels/tslab/?\s*$" <<<"$LISTING"; then
  die "Jupyter does not list the tslab kernel; check $KERNEL_DIR/kernel.json"
fi

echo
echo "tslab is registered. Open the notebooks with:"
if [ -n "$PREFIX" ]; then
  echo "  JUPYTER_PATH=$DATA_DIR jupyter notebook $ROOT/notebooks/"
else
  echo "  jupyter notebook $ROOT/notebooks/"
fi
echo "or run one headless:  node $ROOT/dist/lib/cli.js run-notebook IN.ipynb OUT.ipynb -p NAME VALUE"
