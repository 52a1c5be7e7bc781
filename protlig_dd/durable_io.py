"""Writes that survive a crash or a full disk: fsynced files, and folders built aside then swapped in.

``atomic_folder`` is the project's one "write into a temporary folder, fsync, rename into place"
(checkpoints, prepared caches). A kill -9 mid-write leaves only the temporary folder, which the
owner's cleanup deletes later and which never has the final name. Any exception deletes the
temporary folder and leaves the final folder as it was; an ``OSError`` (disk full, permission,
I/O error) becomes ``WriteFailedError``, a one-line message naming the folder and saying what is
intact, which the command lines turn into exit status 1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class WriteFailedError(RuntimeError):
    """Writing a folder failed with an OSError; nothing was replaced. The message is one line."""


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _RecordingWriter:
    """A binary file that remembers the first OSError of ``write``.

    torch.save reports a failed write (ENOSPC) as a RuntimeError of its zip writer ("unexpected
    pos"), which would hide the cause; ``write_file`` raises the recorded OSError instead.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self._handle.flush()


def write_file(path: Path, write: Callable[[Any], object]) -> None:
    """Create ``path``, fill it with ``write(handle)`` and fsync it.

    A failed write is raised as an OSError naming ``path``, whatever ``write`` turned it into.
    """
    try:
        with open(path, "wb") as handle:
            recorder = _RecordingWriter(handle)
            try:
                write(recorder)
            except (OSError, RuntimeError):
                # torch.save reports a failed write (e.g. ENOSPC) as a RuntimeError: raise the OSError the
                # recorder saw instead, so callers see which errno and file. Anything else propagates as is.
                if recorder.error is not None:
                    raise recorder.error from None
                raise
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        if err.filename is None:  # a write() error does not say which file
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


@contextmanager
def atomic_folder(final: Path, tmp: Path, *, what: str, intact: str) -> Iterator[Path]:
    """Yield the new empty folder ``tmp``; when the block ends normally, put it in place of ``final``.

    Files written in the block must be fsynced (``write_file`` does it). Then the folder is fsynced
    and renamed to ``final``; an existing ``final`` is first moved aside to ``<tmp>.old`` (the same
    prefix as ``tmp``, so the owner's cleanup of leftovers finds it too) and deleted afterwards.
    On an exception ``tmp`` is deleted and ``final`` is unchanged; an OSError is raised as
    WriteFailedError "cannot write <what> <final>: <error>; <intact>".
    """
    final, tmp = Path(final), Path(tmp)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        yield tmp
        fsync_dir(tmp)
        _swap(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise WriteFailedError(f"cannot write {what} {final}: {err}; {intact}") from err
        raise


def _swap(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``, replacing an existing ``final`` only once ``tmp`` is in place."""
    old = tmp.with_name(tmp.name + ".old")
    if not final.exists():
        os.rename(tmp, final)
        fsync_dir(final.parent)
        return
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        os.rename(old, final)
        raise
    fsync_dir(final.parent)
    # The new folder is in place: a failed delete leaves a leftover the owner's cleanup removes.
    shutil.rmtree(old, ignore_errors=True)
