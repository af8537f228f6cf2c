#!/usr/bin/env bash
# Regenerate the host tuning records shipped in tuning_logs/ for THIS machine's CPU.
#   bash scripts/regen_host_records.sh [TRIALS]      (default 160 trials per model)
# Records are keyed by the host target (CPU name, core count: tuning_logs/host/<key>/),
# so a run on another CPU adds that CPU's set and leaves the others alone; builds on a
# matching CPU apply them automatically. Run it on a quiet machine (every candidate is
# measured back to back: a loaded machine skews the comparison), then commit
# tuning_logs/host/ and the bench table it was measured with (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-160}
TVM_CRUISE=${TVM_CRUISE:-tvm-cruise}
for model in perception-cnn resnet18 transformer; do
  "$TVM_CRUISE" tune "$model" --target llvm --host-only --tuning-logs tuning_logs \
    --trials "$TRIALS" --retune
done
"$TVM_CRUISE" logs list tuning_logs
