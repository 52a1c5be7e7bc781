#!/usr/bin/env bash
# Start a new training run. An earlier run in the same work_dir is moved aside to
# <work_dir>/archived_runs/ (never deleted). Extra arguments go to the entry point, e.g.
#   ./start_fresh_training.sh --work_dir runs/my_run --datafile /data/uniref50.fasta.gz
#   NPROC=4 ./start_fresh_training.sh --config configs/config_uniref50_optimized.yaml
# See scripts/launch_common.sh for the environment variables (CONFIG, WORK_DIR, LOG_DIR, NPROC...).
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/scripts/launch_common.sh"
launch_training start_fresh --fresh "$@"
exit $?
