#!/usr/bin/env bash
# Set up the virtual environment and run the demo: compile the bundled perception CNN for
# cruise-npu, run it, print what ran where and the numbers vs PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-$PWD/.venv}
bash scripts/setup_env.sh
exec "$VENV/bin/tvm-cruise" demo "$@"
