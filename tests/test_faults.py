"""Faults end in one-line errors and lose nothing (issue 12).

A truncated or corrupt gzip source is a SourceError naming the file and the byte (exit 2); a full
disk (any OSError) while a checkpoint or a prepared cache is written is a WriteFailedError naming
the folder and saying the previous one is intact (exit 1), and no partial folder is left that could
be taken for a complete one. Each is checked through the command lines (prepare and training), with
a patched write and, where a user namespace allows mounting a tmpfs, on a real full filesystem.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY_CONFIG
from real_data import write_real_fasta_gz

from protlig_dd.data.cache import PreparedCache
from protlig_dd.training import checkpoint as ckpt

TRAIN_CLI = "protlig_dd.training.run_train_uniref50_optimized"
PREPARE_CLI = "protlig_dd.data.prepare"
# A 2-checkpoint tiny run: the save at step 4 is the one that meets the full disk.
TINY_STEPS = ["training.max_steps=4", "eval.every=0", "sampling.every=0", "checkpoint.every=2"]

# Runs a command-line module with file writes that fail with ENOSPC once a few bytes are written to
# a file matching a pattern: a disk that fills up in the middle of a write.
FULL_DISK = textwrap.dedent(
    """
    import builtins, errno, fnmatch, runpy, sys
    from protlig_dd import durable_io
    from protlig_dd.data import cache

    class FullDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, data):
            size = memoryview(data).nbytes
            if self.written + size > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += size
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    pattern, module, *args = sys.argv[1:]

    def full_open(path, mode="r", *rest, **kwargs):
        handle = builtins.open(path, mode, *rest, **kwargs)
        return FullDisk(handle) if fnmatch.fnmatch(str(path), pattern) else handle

    durable_io.open = full_open  # checkpoint files and meta.json
    cache.open = full_open  # the flat cache files
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(module: str, *args: object, full_disk: str | None = None) -> subprocess.CompletedProcess:
    """Run a command-line module; with ``full_disk`` writes to files matching it fail with ENOSPC."""
    prefix = ["-c", FULL_DISK, full_disk] if full_disk else ["-m"]
    return subprocess.run(
        [sys.executable, *prefix, module, *map(str, args)],
        env=_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _train_args(work: Path, source: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [
        "--work_dir", work, "--config", TINY_CONFIG, "--device", "cpu", "--datafile", source,
        "--set", f"data.cache_dir={cache_dir}", *TINY_STEPS, *extra,
    ]  # fmt: skip


def _error_lines(stderr: str) -> list[str]:
    """The error lines of a run: prepare prints 'error: ...', training logs '... ERROR protlig_dd: ...'."""
    return [line for line in stderr.splitlines() if line.startswith("error: ") or " ERROR " in line]


def _caches(cache_dir: Path) -> dict[str, str]:
    """name -> fingerprint of every complete cache in ``cache_dir`` (hidden temporaries are not caches)."""
    return {p.name: PreparedCache.open(p).fingerprint for p in cache_dir.iterdir() if not p.name.startswith(".")}


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _bit_flipped(position: float):
    def flip(data: bytes) -> bytes:
        damaged = bytearray(data)
        damaged[int(len(data) * position)] ^= 0x10
        return bytes(damaged)

    return flip


DAMAGES = {
    "truncated": (_truncated, "truncated gzip file: the compressed data end at byte"),
    "bit flip early": (_bit_flipped(0.1), "corrupt gzip data detected near compressed byte"),
    "bit flip late": (_bit_flipped(0.9), "corrupt gzip data detected near compressed byte"),
}


# ------------------------------------------------------------------------ damaged compressed source


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_prepare_damaged_gzip_is_one_line_error_and_keeps_the_cache(tmp_path: Path, damage: str) -> None:
    """A truncated or bit-flipped .fasta.gz given to prepare: exit 2, one line naming the file and the
    byte (no EOFError/zlib traceback), and the cache prepared from the intact file is kept."""
    make_damage, needle = DAMAGES[damage]
    source = write_real_fasta_gz(tmp_path / "uniref50.fasta.gz", 400)
    out = tmp_path / "cache"
    assert _run(PREPARE_CLI, "--source", source, "--out", out, "--no-progress").returncode == 0
    before = PreparedCache.open(out).fingerprint
    source.write_bytes(make_damage(source.read_bytes()))

    result = _run(PREPARE_CLI, "--source", source, "--out", out, "--no-progress")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}: ") and needle in lines[0], result.stderr
    if damage == "truncated":
        assert f"end at byte {source.stat().st_size:,} " in lines[0]
    assert PreparedCache.open(out).fingerprint == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache.lock", "cache", "uniref50.fasta.gz"]


def test_training_with_truncated_datafile_exits_2_and_keeps_checkpoint_and_cache(tmp_path: Path) -> None:
    """--datafile pointing at a .fasta.gz cut short: exit 2 with one error line naming the file and
    the byte; the run's checkpoint and its prepared cache of the intact file are untouched."""
    source = write_real_fasta_gz(tmp_path / "train.fasta.gz", 400)
    work, cache_dir = tmp_path / "run", tmp_path / "cache"
    first = _run(TRAIN_CLI, *_train_args(work, source, cache_dir, "training.max_steps=2"))
    assert first.returncode == 0, first.stderr
    caches = _caches(cache_dir)
    source.write_bytes(_truncated(source.read_bytes()))

    result = _run(TRAIN_CLI, *_train_args(work, source, cache_dir, "training.max_steps=2"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = _error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert f"{source}: truncated gzip file: the compressed data end at byte {source.stat().st_size:,}" in errors[0]
    assert [c.step for c in ckpt.list_checkpoints(work)] == [2]
    ckpt.load_file(work / "checkpoints" / "step_00000002" / "model.pt")
    assert _caches(cache_dir) == caches


# ----------------------------------------------------------------------- full disk, patched write


def test_full_disk_during_checkpoint_save_keeps_previous_and_resumes(tmp_path: Path) -> None:
    """ENOSPC while train_state.pt of the step-4 checkpoint is written (torch.save reports it as a
    RuntimeError; the OSError is what is shown): exit 1, one line naming the folder and the intact
    previous checkpoint, no temporary or step-4 folder left; the step-2 checkpoint resumes to the end."""
    source = write_real_fasta_gz(tmp_path / "train.fasta.gz", 400)
    work, cache_dir = tmp_path / "run", tmp_path / "cache"
    args = _train_args(work, source, cache_dir)
    result = _run(TRAIN_CLI, *args, full_disk="*/.tmp-step_00000004-*/train_state.pt")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = _error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    root = work / "checkpoints"
    assert f"cannot write checkpoint {root / 'step_00000004'}: [Errno 28] No space left on device: " in errors[0]
    assert errors[0].endswith(f"train_state.pt'; the previous checkpoint {root / 'step_00000002'} is intact")
    assert sorted(os.listdir(root)) == ["step_00000002"]  # the temporary folder is gone

    resumed = _run(TRAIN_CLI, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {root / 'step_00000002'}" in resumed.stderr
    assert [c.step for c in ckpt.list_checkpoints(work)] == [2, 4]


@pytest.mark.parametrize("previous", [True, False])
def test_full_disk_during_prepare_keeps_previous_cache(tmp_path: Path, previous: bool) -> None:
    """ENOSPC while tokens.bin of a cache is written: exit 1, one line naming the cache and saying the
    previous one is intact (or that there was none); only the previous cache is left, unchanged."""
    source = write_real_fasta_gz(tmp_path / "uniref50.fasta.gz", 400)
    out = tmp_path / "cache"
    before = None
    if previous:
        assert _run(PREPARE_CLI, "--source", source, "--out", out, "--no-progress").returncode == 0
        before = PreparedCache.open(out).fingerprint
    result = _run(PREPARE_CLI, "--source", source, "--out", out, "--no-progress", "--force", full_disk="*/tokens.bin")
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot write prepared cache {out}: [Errno 28] No space left on device")
    intact = f"the previous cache {out} is intact" if previous else f"there was no cache at {out}"
    assert lines[0].endswith(f"; {intact}"), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".cache.lock", "uniref50.fasta.gz"] + (["cache"] if previous else [])
    )
    if previous:
        assert PreparedCache.open(out).fingerprint == before


def test_full_disk_while_training_prepares_its_cache(tmp_path: Path) -> None:
    """The training command line maps a cache that cannot be written to exit 1 with one line, too."""
    source = write_real_fasta_gz(tmp_path / "train.fasta.gz", 400)
    work, cache_dir = tmp_path / "run", tmp_path / "cache"
    result = _run(TRAIN_CLI, *_train_args(work, source, cache_dir), full_disk="*/tokens.bin")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and "cannot write prepared cache" in errors[0], result.stderr
    assert "No space left on device" in errors[0] and "there was no cache at" in errors[0]
    assert not [p for p in cache_dir.iterdir() if not p.name.endswith(".lock")]


# ------------------------------------------------------------------------- a real full filesystem


def _tmpfs_unavailable(tmp_path: Path) -> str | None:
    """Why a small tmpfs cannot be mounted here without privileges (None when it can)."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        proc = subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(probe))}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare failed: {err}"
    if proc.returncode != 0:
        return f"no tmpfs mount in a user namespace: {proc.stderr.strip() or proc.returncode}"
    return None


def _in_small_tmpfs(mount: Path, size_bytes: int, script: str) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace where ``mount`` is a tmpfs of ``size_bytes``
    (the tmpfs and what it holds vanish with the namespace: the script copies out what it needs)."""
    mount.mkdir(parents=True, exist_ok=True)
    command = f"mount -t tmpfs -o size={size_bytes} tmpfs {shlex.quote(str(mount))} && {script}"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", command], env=_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )


def _shell(module: str, *args: object, log: Path) -> str:
    """A shell command running ``module`` with stderr to ``log``; its exit code is echoed as 'rc=N'."""
    words = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", module, *args))
    return f"{words} 2>{shlex.quote(str(log))}; echo rc=$?"


@pytest.mark.slow  # three tiny training runs (~30 s); the patched-write test covers this path by default
def test_real_full_filesystem_checkpoint(tmp_path: Path) -> None:
    """A run directory on a tmpfs with room for one checkpoint: the resumed run's next save fails for
    real (torch.save turns the ENOSPC into a RuntimeError; the OSError is what is shown), exit 1 with
    the one-line message; the tmpfs then holds only the first checkpoint, which resumes to the end."""
    reason = _tmpfs_unavailable(tmp_path)
    if reason:
        pytest.skip(reason)
    source = write_real_fasta_gz(tmp_path / "train.fasta.gz", 400)
    first, work, saved = tmp_path / "first", tmp_path / "run", tmp_path / "saved"
    cache_dir, log = tmp_path / "cache", tmp_path / "train.err"
    assert _run(TRAIN_CLI, *_train_args(first, source, cache_dir, "training.max_steps=2")).returncode == 0
    one_checkpoint = sum(f.stat().st_size for f in ckpt.latest_checkpoint(first).path.iterdir())
    args = _train_args(work, source, cache_dir)
    script = (
        f"cp -a {shlex.quote(str(first))}/. {shlex.quote(str(work))} && "
        + _shell(TRAIN_CLI, *args, log=log)
        + f" && cp -a {shlex.quote(str(work))} {shlex.quote(str(saved))}"
    )
    # Room for the copied run (one checkpoint and its logs) and half of a second checkpoint.
    proc = _in_small_tmpfs(work, one_checkpoint * 3 // 2 + 64 * 1024, script)
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["rc=1"], (proc.stdout, proc.stderr, log.read_text())
    stderr = log.read_text()
    assert "Traceback" not in stderr
    errors = _error_lines(stderr)
    assert len(errors) == 1 and "No space left on device" in errors[0], stderr
    assert f"the previous checkpoint {work / 'checkpoints' / 'step_00000002'} is intact" in errors[0]
    assert sorted(os.listdir(saved / "checkpoints")) == ["step_00000002"]

    shutil.rmtree(work)  # the empty mount point; the tmpfs is gone with its namespace
    shutil.copytree(saved, work)
    resumed = _run(TRAIN_CLI, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.latest_checkpoint(work).step == 4


def test_real_full_filesystem_cache(tmp_path: Path) -> None:
    """A cache directory on a small tmpfs: a small cache fits; rebuilding it from a larger source
    fails for real, exit 1 with the one-line message, and the small cache is left as it was."""
    reason = _tmpfs_unavailable(tmp_path)
    if reason:
        pytest.skip(reason)
    small = write_real_fasta_gz(tmp_path / "small.fasta.gz", 50)
    large = write_real_fasta_gz(tmp_path / "large.fasta.gz", 2000)
    disk, saved = tmp_path / "disk", tmp_path / "saved"
    source = disk / "source.fasta.gz"  # same path for both, so the second run rebuilds the same cache
    logs = [tmp_path / "first.err", tmp_path / "second.err"]
    out = disk / "cache"
    script = " && ".join(
        [
            f"cp {small} {source}",
            _shell(PREPARE_CLI, "--source", source, "--out", out, "--no-progress", log=logs[0]),
            f"cp {large} {source}",
            _shell(PREPARE_CLI, "--source", source, "--out", out, "--no-progress", log=logs[1]),
            f"rm {source} && cp -a {disk} {saved}",
        ]
    )
    proc = _in_small_tmpfs(disk, 400 * 1024, script)
    exit_codes = [line for line in proc.stdout.splitlines() if line.startswith("rc=")]
    assert proc.returncode == 0 and exit_codes == ["rc=0", "rc=1"], (proc.stdout, proc.stderr)
    lines = [line for line in logs[1].read_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: cannot write prepared cache {out}: [Errno 28] No space left on device")
    assert lines[0].endswith(f"; the previous cache {out} is intact")
    assert sorted(p.name for p in saved.iterdir()) == [".cache.lock", "cache"]
    kept = PreparedCache.open(saved / "cache")
    assert len(kept) == 50
