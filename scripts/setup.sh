#!/usr/bin/env bash
# Everything the tests and the notebooks need on a fresh Debian machine (root, or a user with sudo):
# Debian packages (Jupyter from Debian, no PyPI; fonts for chart text; Fashion-MNIST for rebuilding
# data-samples/), then `npm ci`. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# jupyter-nbconvert runs a notebook on our kernelspec in the tests; python3-nbformat validates what our
# runner writes; jupyter-client drives tslab in the chart tests; jupyter-notebook for interactive use
# and, with chromium, the browser smoke test; chromium also runs the model page's test (test/page.test.ts,
# driven by playwright-core from npm, which downloads no browser). libdnnl-dev (oneDNN), g++ and make build the native
# training kernels (native/onednn) during `npm ci`. protobuf-compiler: protoc decodes our TensorBoard
# event files with TensorFlow's event.proto in the tests (TensorBoard itself needs PyPI).
# python3-sklearn: the evaluation tests recompute every figure of imgclass evaluate with scikit-learn.
apt_packages=(jupyter-client jupyter-nbconvert python3-nbclient python3-nbformat jupyter-notebook
  fonts-dejavu-core dataset-fashion-mnist chromium libdnnl-dev g++ make protobuf-compiler python3-sklearn)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
npm ci --no-audit --no-fund
