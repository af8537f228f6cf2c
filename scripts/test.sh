#!/usr/bin/env bash
# Set up the virtual environment and run the test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not slow" -k artifact`.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-$PWD/.venv}
bash scripts/setup_env.sh
# Run from tests/ so `import tvm_cruise` resolves to the installed package, not the source tree.
cd tests
exec "$VENV/bin/python" -m pytest -c ../pyproject.toml --rootdir .. "$@"
