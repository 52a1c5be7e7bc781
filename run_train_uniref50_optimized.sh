#!/usr/bin/env bash
# Train, resuming the latest complete checkpoint in the work_dir if there is one (fresh otherwise).
# Extra arguments go to the entry point, e.g.
#   ./run_train_uniref50_optimized.sh --config configs/config_uniref50_optimized.yaml --work_dir runs/opt
#   ./run_train_uniref50_optimized.sh --nproc 8 --work_dir runs/opt      # one node, 8 GPUs (torchrun)
# See scripts/launch_common.sh for the environment variables (CONFIG, WORK_DIR, LOG_DIR, NPROC...).
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/scripts/launch_common.sh"
launch_training run_train "$@"
exit $?
