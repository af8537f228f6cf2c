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
# builds and tuning logs are made once. Builds are mostly single-threaded; on a 2-core
# AMD EPYC (znver3) the default suite took 1466 s in one process, 900 and 1175 s (two
# runs, a noisy VM) with two workers. `-n 0` (after these options) runs it in one process.
exec "$VENV/bin/python" -m pytest -c ../pyproject.toml --rootdir .. \
  --numprocesses logical --maxprocesses 4 --dist loadfile "$@"
