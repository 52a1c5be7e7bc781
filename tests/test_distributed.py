"""Multi-process training through torchrun on CPU with gloo (issue 6).

Every test launches real processes: ``python -m torch.distributed.run --standalone
--nproc_per_node=2 -m protlig_dd.training.run_train_uniref50_optimized`` (or the shell launcher)
on the tiny config. The global batch is fixed with ``training.global_batch_tokens``: with 512, one
process accumulates 2 micro-batches of 256 tokens per step and two processes take 1 each; with
1024 (``ACCUMULATE``), 4 and 2, so the micro-steps without gradient sync are exercised too. Noise
and dropout are seeded per global micro-batch, so such runs must give the same losses and weights.
The 1-process reference runs are shared by the tests of this module.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import REPO_ROOT, TINY_CONFIG

from protlig_dd.config import ConfigError, load_config
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training.builders import build_model
from protlig_dd.training.distributed import DistInfo
from protlig_dd.training.parallel import wrap_model

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

TIMEOUT = 300  # seconds per launch; a hang fails the test instead of blocking the suite
MAX_STEPS = 6
# checkpoints at steps 3 and 6. The data is the 17-taxon embedded sample these tolerances were set on:
# with the Swiss-Prot default, fp32 reductions in another order move a few embedding weights by 1-3e-6
# after 6 Adam steps (Adam's normalisation amplifies near-cancelling gradients), just past atol 1e-6.
OVERRIDES = ["training.global_batch_tokens=512", "checkpoint.every=3", "data.embedded_train=uniref50_17taxa"]
ACCUMULATE = ["training.global_batch_tokens=1024"]  # overrides the 512 above: 2 micro-batches per process
ENTRY = ["-m", "protlig_dd.training.run_train_uniref50_optimized"]
FAILING_ENTRY = [str(Path(__file__).resolve().parent / "failing_rank_entry.py")]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _train_args(work_dir: Path, cache: Path, extra_sets: list[str], resume: Path | None) -> list[str]:
    args = ["--work_dir", str(work_dir), "--config", str(TINY_CONFIG), "--device", "cpu"]
    if resume is not None:
        args += ["--resume", str(resume)]
    return [*args, "--set", f"data.cache_dir={cache}", *OVERRIDES, *extra_sets]


def _launch(
    nproc: int,
    work_dir: Path,
    cache: Path,
    extra_sets: list[str] = (),
    resume: Path | None = None,
    entry: list[str] = ENTRY,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run training with ``nproc`` processes (torchrun when > 1) and wait for it."""
    if nproc == 1:
        launcher = [sys.executable, *entry]
    else:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *entry,
        ]
    return subprocess.run(
        [*launcher, *_train_args(work_dir, cache, list(extra_sets), resume)],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (
        f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    )


def _metric_rows(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(work_dir: Path) -> dict[int, float]:
    rows = [row for row in _metric_rows(work_dir) if "loss" in row]
    steps = [row["step"] for row in rows]
    assert len(steps) == len(set(steps)), f"duplicate metric rows (more than one rank logging?): {steps}"
    return {row["step"]: row["loss"] for row in rows}


def _step_checkpoint(work_dir: Path, step: int) -> Path:
    path = ckpt.checkpoint_root(work_dir) / ckpt.step_dir_name(step)
    assert ckpt.is_complete(path), f"no complete checkpoint {path}"
    return path


def _weights(work_dir: Path, step: int = MAX_STEPS) -> dict:
    return ckpt.load_file(_step_checkpoint(work_dir, step) / "model.pt")


def _assert_same_losses(reference: dict[int, float], other: dict[int, float], steps: range) -> None:
    for step in steps:
        assert other[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), f"step {step}"


def _assert_same_weights(a: dict, b: dict) -> None:
    """Model and EMA weights agree (fp32 reductions in another order differ in the last bits only)."""
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        torch.testing.assert_close(
            a["model"][name], b["model"][name], rtol=1e-5, atol=1e-6, msg=f"model.{name}"
        )
    for section in ("shadow", "buffers"):
        assert a["ema"][section].keys() == b["ema"][section].keys()
        for name in a["ema"][section]:
            torch.testing.assert_close(
                a["ema"][section][name], b["ema"][section][name], rtol=1e-5, atol=1e-6, msg=f"ema.{name}"
            )


def test_wrap_model_strategies_without_a_process_group() -> None:
    """One process trains unwrapped whatever distributed.strategy says (gradient sync is a no-op), and
    FSDP with an fp16 grad scaler is refused with a ConfigError before any sharding: the scaler's
    overflow check would be per shard and ranks could disagree on skipping a step."""
    cfg = load_config(TINY_CONFIG, ["distributed.strategy=fsdp"])
    model = build_model(cfg, Alphabet())
    single = wrap_model(model, cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    assert single.strategy == "single" and single.module is model and not single.sharded
    with single.gradient_sync(False):
        pass
    with pytest.raises(ConfigError, match="fsdp does not support training.precision fp16"):
        wrap_model(model, cfg, DistInfo(0, 2, 0, torch.device("cpu")), uses_grad_scaler=True)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distributed_runs")


@pytest.fixture(scope="module")
def one_process_run(runs_dir: Path, shared_cache_dir: Path) -> Path:
    """The reference: 6 steps in one process, 2 micro-batches per step."""
    work = runs_dir / "one_process"
    _check(_launch(1, work, shared_cache_dir))
    return work


@pytest.fixture(scope="module")
def one_process_accumulating_run(runs_dir: Path, shared_cache_dir: Path) -> Path:
    """The reference with a global batch of 1024 tokens: 4 micro-batches per step in one process."""
    work = runs_dir / "one_process_accumulating"
    _check(_launch(1, work, shared_cache_dir, extra_sets=ACCUMULATE))
    assert "1 process(es) (single), 4 micro-batch(es)" in (work / "train.log").read_text()
    return work


@pytest.fixture(scope="module")
def two_process_run(runs_dir: Path, shared_cache_dir: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """The same run with 2 DDP processes, started the way users do: ``NPROC=2 ./run_train_...sh``."""
    work = runs_dir / "two_processes"
    command = [
        str(REPO_ROOT / "run_train_uniref50_optimized.sh"),
        *_train_args(work, shared_cache_dir, [], None),
    ]
    env = _env(NPROC="2", PYTHON=sys.executable, LOG_DIR=str(runs_dir / "launcher_logs"))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    _check(result)
    return work, result


def test_launcher_with_nproc_goes_through_torchrun(
    two_process_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    """NPROC=2 ./run_train_uniref50_optimized.sh launches torchrun with 2 processes per node, and only rank 0
    writes the run's outputs (one metrics row per step, rank-0 log lines only, the checkpoints)."""
    work, result = two_process_run
    launch_line = result.stdout.splitlines()[0]
    assert "-m torch.distributed.run --nproc_per_node=2 --nnodes=1 --standalone" in launch_line, launch_line
    train_log = (work / "train.log").read_text()
    assert "2 process(es) (ddp), 1 micro-batch(es) per step per process" in train_log
    assert "[rank 1]" not in train_log
    assert sorted(_losses(work)) == list(range(1, MAX_STEPS + 1))
    assert [c.step for c in ckpt.list_checkpoints(work)] == [3, 6]
    assert sorted(p.name for p in (work / "samples").iterdir()) == [
        "step_00000003.fasta",
        "step_00000006.fasta",
    ]


def test_two_processes_equal_one_process_with_the_same_global_batch(
    one_process_run: Path, two_process_run: tuple[Path, subprocess.CompletedProcess]
) -> None:
    """2 DDP processes x 1 micro-batch == 1 process x 2 micro-batches: the same loss at every step
    (token-weighted over the global batch, noise seeded per global micro-batch) and the same final
    weights and EMA."""
    work, _ = two_process_run
    assert "1 process(es) (single), 2 micro-batch(es)" in (one_process_run / "train.log").read_text()
    _assert_same_losses(_losses(one_process_run), _losses(work), range(1, MAX_STEPS + 1))
    _assert_same_weights(_weights(one_process_run), _weights(work))


def test_two_processes_accumulating_equal_one_process(
    runs_dir: Path, shared_cache_dir: Path, one_process_accumulating_run: Path
) -> None:
    """2 DDP processes x 2 micro-batches (gradient sync skipped on the first, no_sync) == 1 process x 4:
    same losses and weights, so accumulation without the micro-step all-reduce loses nothing."""
    work = runs_dir / "two_processes_accumulating"
    _check(_launch(2, work, shared_cache_dir, extra_sets=ACCUMULATE))
    assert "2 process(es) (ddp), 2 micro-batch(es)" in (work / "train.log").read_text()
    _assert_same_losses(_losses(one_process_accumulating_run), _losses(work), range(1, MAX_STEPS + 1))
    _assert_same_weights(_weights(one_process_accumulating_run), _weights(work))


def test_checkpoints_resume_under_another_world_size(
    runs_dir: Path,
    shared_cache_dir: Path,
    one_process_run: Path,
    two_process_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    """The step-3 checkpoint of the 2-process run resumes in 1 process, and the 1-process one in 2 processes;
    both reach the straight run's losses and final weights (the data stream continues at the same global
    batch whatever the world size; accumulation adapts through training.global_batch_tokens)."""
    two_work, _ = two_process_run
    reference = _losses(one_process_run)
    for nproc, source in ((1, two_work), (2, one_process_run)):
        work = runs_dir / f"resumed_in_{nproc}"
        _check(_launch(nproc, work, shared_cache_dir, resume=_step_checkpoint(source, 3)))
        assert f"resumed from {_step_checkpoint(source, 3)} at step 3" in (work / "train.log").read_text()
        losses = _losses(work)
        assert sorted(losses) == [4, 5, 6]
        _assert_same_losses(reference, losses, range(4, MAX_STEPS + 1))
        _assert_same_weights(_weights(one_process_run), _weights(work))


def test_a_failing_rank_fails_the_whole_launch(runs_dir: Path, shared_cache_dir: Path) -> None:
    """A rank that raises at step 2 (injected by tests/failing_rank_entry.py) ends the torchrun launch with a
    non-zero exit well within the timeout: rank 0, waiting in a collective, does not hang."""
    env = _env(PROTLIG_TEST_FAIL_RANK="1", PROTLIG_TEST_FAIL_STEP="2")
    result = _launch(
        2,
        runs_dir / "failing",
        shared_cache_dir,
        extra_sets=["training.max_steps=50", "distributed.timeout_minutes=30"],
        entry=FAILING_ENTRY,
        env=env,
    )  # subprocess.run raises TimeoutExpired (failing the test) if the launch hangs
    assert result.returncode != 0
    assert "injected failure on rank 1 at step 2" in result.stderr
    assert max(_losses(runs_dir / "failing")) == 1  # no rank went past the failing step


def test_fsdp_equals_one_process_and_its_checkpoints_move_both_ways(
    runs_dir: Path, shared_cache_dir: Path, one_process_accumulating_run: Path
) -> None:
    """distributed.strategy=fsdp (FSDP2 fully_shard per block and root, 2 processes x 2 micro-batches with
    gradient sync only on the last, gloo on CPU) gives the 1-process losses and weights (EMA kept over
    the shards, gathered for saving); its step-3 checkpoint (full state dicts) resumes in 1 process, and
    the 1-process checkpoint resumes under FSDP, both reaching the straight run's final weights. Samples
    (rank 0, from a gathered replica of the EMA weights) equal the reference's."""
    reference_work = one_process_accumulating_run
    fsdp = ["distributed.strategy=fsdp", *ACCUMULATE]
    fsdp_work = runs_dir / "fsdp"
    _check(_launch(2, fsdp_work, shared_cache_dir, extra_sets=fsdp))
    assert "2 process(es) (fsdp), 2 micro-batch(es)" in (fsdp_work / "train.log").read_text()
    reference = _losses(reference_work)
    _assert_same_losses(reference, _losses(fsdp_work), range(1, MAX_STEPS + 1))
    _assert_same_weights(_weights(reference_work), _weights(fsdp_work))
    for name in ("step_00000003.fasta", "step_00000006.fasta"):
        assert (fsdp_work / "samples" / name).read_text() == (reference_work / "samples" / name).read_text()

    resumed = runs_dir / "fsdp_resumed_in_1"
    from_fsdp = _step_checkpoint(fsdp_work, 3)
    _check(_launch(1, resumed, shared_cache_dir, extra_sets=ACCUMULATE, resume=from_fsdp))
    _assert_same_losses(reference, _losses(resumed), range(4, MAX_STEPS + 1))
    _assert_same_weights(_weights(reference_work), _weights(resumed))

    into_fsdp = runs_dir / "resumed_in_fsdp"
    from_one = _step_checkpoint(reference_work, 3)
    _check(_launch(2, into_fsdp, shared_cache_dir, extra_sets=fsdp, resume=from_one))
    _assert_same_losses(reference, _losses(into_fsdp), range(4, MAX_STEPS + 1))
    _assert_same_weights(_weights(reference_work), _weights(into_fsdp))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_multi_node_launcher_form(runs_dir: Path, shared_cache_dir: Path, one_process_run: Path) -> None:
    """The multi-node form of the launcher (NNODES=2, MASTER_ADDR/MASTER_PORT, one launcher per "node", here
    two on localhost sharing the run directory) rendezvous into one 2-process job equal to the reference."""
    work = runs_dir / "two_nodes"
    env = _env(
        NNODES="2",
        NPROC="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        RDZV_ID="protlig_dd_test",
        PYTHON=sys.executable,
        LOG_DIR=str(runs_dir / "node_logs"),
    )
    command = [
        str(REPO_ROOT / "run_train_uniref50_optimized.sh"),
        *_train_args(work, shared_cache_dir, [], None),
    ]
    nodes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    nodes.append(
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    )
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=TIMEOUT)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-6000:]
        assert "--rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:" in output.splitlines()[0]
    assert "2 process(es) (ddp)" in (work / "train.log").read_text()
    _assert_same_losses(_losses(one_process_run), _losses(work), range(1, MAX_STEPS + 1))
    _assert_same_weights(_weights(one_process_run), _weights(work))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL)")
def test_fsdp_and_ddp_agree_on_two_gpus(runs_dir: Path, shared_cache_dir: Path) -> None:
    """On 2 GPUs with NCCL, FSDP2 and DDP runs of the tiny config (fp32) give the same losses and weights."""
    results = {}
    for strategy in ("ddp", "fsdp"):
        work = runs_dir / f"gpu_{strategy}"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *ENTRY,
            "--work_dir", str(work), "--config", str(TINY_CONFIG), "--device", "cuda",
            "--set", f"data.cache_dir={shared_cache_dir}", *OVERRIDES, f"distributed.strategy={strategy}",
        ]  # fmt: skip
        _check(subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=TIMEOUT))
        results[strategy] = work
    _assert_same_losses(_losses(results["ddp"]), _losses(results["fsdp"]), range(1, MAX_STEPS + 1))
    _assert_same_weights(_weights(results["ddp"]), _weights(results["fsdp"]))
