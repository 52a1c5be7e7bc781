"""The run directory: its layout, the single-run lock, and moving an earlier run aside.

Layout of ``work_dir``::

    train.lock            held (flock) by the running training process
    config.yaml           the resolved config of the current run
    metrics.jsonl         one JSON row per log / validation event
    checkpoints/step_00001000/ ...   complete checkpoints (see checkpoint.py)
    samples/step_00001000.fasta      sequences sampled during training
    data_cache/           prepared token caches (reused across runs)
    archived_runs/run-YYYYmmdd-HHMMSS/   earlier runs moved aside by --fresh
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

LOCK_NAME = "train.lock"
# Entries --fresh moves aside; the data cache stays (it depends on the data, not on the run).
RUN_ENTRIES = ("checkpoints", "samples", "metrics.jsonl", "config.yaml", "wandb")


class RunLockedError(RuntimeError):
    """Another training process holds the work_dir lock."""


class RunLock:
    """An exclusive advisory lock on ``work_dir/train.lock``.

    flock is released by the kernel when the process dies (even by kill -9), so a crashed run
    never leaves a stale lock behind.
    """

    def __init__(self, work_dir: Path) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"{self.path}: another training run (pid {holder}) is using this work_dir; "
                "wait for it to finish or choose another --work_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def has_previous_run(work_dir: Path) -> bool:
    """True if ``work_dir`` holds anything of an earlier run (checkpoints, metrics, samples...)."""
    return any((Path(work_dir) / name).exists() for name in RUN_ENTRIES)


def archive_previous_run(work_dir: Path) -> Path | None:
    """Move an earlier run's files into ``archived_runs/run-<timestamp>/``; returns that folder.

    Nothing is deleted; the data cache is left in place for reuse. Call with the lock held.
    """
    work_dir = Path(work_dir)
    present = [work_dir / name for name in RUN_ENTRIES if (work_dir / name).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = work_dir / "archived_runs" / f"run-{stamp}"
    suffix = 1
    while target.exists():
        target = work_dir / "archived_runs" / f"run-{stamp}-{suffix}"
        suffix += 1
    target.mkdir(parents=True)
    for entry in present:
        entry.rename(target / entry.name)
    return target
