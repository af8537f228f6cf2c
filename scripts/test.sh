#!/usr/bin/env bash
# Set up the virtual environment and run the test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not slow" -k artifact`.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-$PWD/.venv}
bash scripts/setup_env.sh
# Run from tests/ so `import tvm_cruise` resolves to the installed package, not the source tree.
cd tests
# One worker process per logical CPU (at most 4), each test file on one worker: the module-scoped
# builds and tuning logs are made once; each worker runs TVM and torch on one thread
# (tests/conftest.py: their per-core pools spun against each other). On a 2-core AMD EPYC
# (znver3) the default suite took 1466 s in one process, 1090 s with two workers and
# per-core pools, 937 s with one thread per worker. `-n 0` (after these options) runs it
# in one process.
exec "$VENV/bin/python" -m pytest -c ../pyproject.toml --rootdir .. \
  --numprocesses logical --maxprocesses 4 --dist loadfile "$@"
