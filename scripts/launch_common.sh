#!/usr/bin/env bash
# Shared body of the top-level launchers. Sourced, not run. Non-interactive; exits with the
# training process's exit code.
#
# Environment (all optional):
#   CONFIG      config file when no --config is passed  (default: configs/config_uniref50_stable.yaml)
#   WORK_DIR    run directory when no --work_dir is passed (default: runs/uniref50)
#   LOG_DIR     where the launcher's log file goes        (default: logs)
#   NPROC       processes per node; > 1 (or NNODES > 1) launches through torchrun (default: 1)
#   NNODES      nodes; > 1 uses torchrun's c10d rendezvous (run the launcher once on every node)
#   MASTER_ADDR, MASTER_PORT (default 29500) or RDZV_ENDPOINT (host:port): the rendezvous host,
#               the same on every node; RDZV_ID (default protlig_dd): a job id shared by the nodes.
#               Node ranks are assigned by the rendezvous. See docs/distributed.md (SLURM example).
#   PYTHON      the Python interpreter (default: python3)
set -uo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${REPO_DIR}${PYTHONPATH:+:${PYTHONPATH}}"
PYTHON="${PYTHON:-python3}"
# glibc: keep large training-step buffers mapped instead of returning them to the kernel every step
# (removes page-fault churn on CPU; docs/performance.md). Ignored by other C libraries.
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-33554432}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-17179869184}"

launch_training() {
    # $1: label for the log file; remaining: extra arguments for the entry point.
    local label="$1"; shift
    local nproc="${NPROC:-1}"
    local args=()
    local has_config=0 has_work_dir=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --nproc) nproc="$2"; shift 2; continue ;;
            --nproc=*) nproc="${1#--nproc=}"; shift; continue ;;
            --config|--config=*) has_config=1 ;;
            --work_dir|--work_dir=*|--work-dir|--work-dir=*) has_work_dir=1 ;;
        esac
        args+=("$1"); shift
    done
    if ! [[ "$nproc" =~ ^[0-9]+$ ]] || [ "$nproc" -lt 1 ]; then
        echo "error: --nproc/NPROC must be a positive integer, got '$nproc'" >&2
        return 2
    fi
    [ "$has_config" -eq 1 ] || args=(--config "${CONFIG:-${REPO_DIR}/configs/config_uniref50_stable.yaml}" "${args[@]}")
    [ "$has_work_dir" -eq 1 ] || args=(--work_dir "${WORK_DIR:-runs/uniref50}" "${args[@]}")

    local log_dir="${LOG_DIR:-logs}"
    mkdir -p "$log_dir" || { echo "error: cannot create log folder $log_dir" >&2; return 2; }
    local nnodes="${NNODES:-1}"
    if ! [[ "$nnodes" =~ ^[0-9]+$ ]] || [ "$nnodes" -lt 1 ]; then
        echo "error: NNODES must be a positive integer, got '$nnodes'" >&2
        return 2
    fi
    # Several nodes may share LOG_DIR (and start in the same second): name the file per host.
    local host_suffix=""
    [ "$nnodes" -gt 1 ] && host_suffix="_$(hostname)"
    local log_file="${log_dir}/${label}_$(date +%Y%m%d_%H%M%S)${host_suffix}.log"

    local cmd
    if [ "$nproc" -gt 1 ] || [ "$nnodes" -gt 1 ]; then
        cmd=("$PYTHON" -m torch.distributed.run --nproc_per_node="$nproc" --nnodes="$nnodes")
        if [ "$nnodes" -gt 1 ]; then
            cmd+=(--rdzv_backend=c10d --rdzv_endpoint="${RDZV_ENDPOINT:-${MASTER_ADDR:?set MASTER_ADDR or RDZV_ENDPOINT for multi-node}:${MASTER_PORT:-29500}}" --rdzv_id="${RDZV_ID:-protlig_dd}")
        else
            cmd+=(--standalone)
        fi
        cmd+=(-m protlig_dd.training.run_train_uniref50_optimized)
    else
        cmd=("$PYTHON" -m protlig_dd.training.run_train_uniref50_optimized)
    fi
    echo "launching: ${cmd[*]} ${args[*]}" | tee "$log_file"
    echo "log: $log_file"
    "${cmd[@]}" "${args[@]}" < /dev/null 2>&1 | tee -a "$log_file"
    local status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        echo "training exited with status $status (log: $log_file)" >&2
    fi
    return "$status"
}
