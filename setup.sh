#!/usr/bin/env bash
# Set up raydd on a fresh machine: the Debian Fashion-MNIST files and a virtualenv at .venv.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")"

# System packages: the Fashion-MNIST files, and Chromium to render reports headless (report checks).
missing=""
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing="$missing dataset-fashion-mnist"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: missing Debian packages:$missing (raydd falls back to RAYDD_DATA/cache/download for the data)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to the builds this project is tested with; pip takes them from a local mirror where one exists.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[multimodal,test]"
echo "setup: ready (.venv/bin/raydd)"
