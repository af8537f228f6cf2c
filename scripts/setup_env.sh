#!/usr/bin/env bash
# Create (or reuse) the virtual environment $VENV (default: .venv in the repository) and
# install tvm-cruise with its test extras into it. Non-editable on purpose: the tests then
# see what a user's `pip install` gets, package data included.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$PWD/.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch==2.13.0 is pinned in the extras: pip takes a CPU build from this machine's disk;
# an unpinned torch would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install --quiet ".[test]"
