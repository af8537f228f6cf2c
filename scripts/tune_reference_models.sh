#!/usr/bin/env bash
# Example tuning job: tune the bundled reference models for one target into one log dir.
#   bash scripts/tune_reference_models.sh TARGET LOG_DIR [TRIALS] [extra tvm-cruise tune args]
# e.g. bash scripts/tune_reference_models.sh cruise-npu-lite tuning_logs/car 600 --time-budget 3600
#      bash scripts/tune_reference_models.sh llvm logs/ 200 --rpc-tracker 10.0.0.2:9190 --rpc-key orin
# Re-running resumes: what the log already holds is skipped (add --retune to redo it).
set -euo pipefail
TARGET=${1:?target, e.g. cruise-npu}
LOGS=${2:?tuning-log directory}
TRIALS=${3:-200}
shift $(( $# < 3 ? $# : 3 ))
TVM_CRUISE=${TVM_CRUISE:-tvm-cruise}
for model in perception-cnn resnet18 transformer; do
  "$TVM_CRUISE" tune "$model" --target "$TARGET" --tuning-logs "$LOGS" --trials "$TRIALS" "$@"
done
"$TVM_CRUISE" logs list "$LOGS"
