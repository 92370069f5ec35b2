"""Atomic file writes: readers see the old file or the whole new one, never half of it.

One recipe everywhere: write a temporary file in the destination's directory (same file system,
so the rename is atomic), flush it to disk (fsync), `os.replace` it over the final name, then
fsync the directory, so the new name itself survives a power loss (the rename lives in the
directory's entries, which the file's fsync does not flush). A
failure or a kill leaves at most a hidden `.tmp-<hex>-<name>` file behind, never a truncated file
under the final name. The temporary name ends with the final name, so writers that pick a format
from the extension (`np.savez` adds `.npz`, PyAV guesses the container from `.mp4`) still work.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_path", "atomic_open", "atomic_write_bytes", "TMP_PREFIX"]

TMP_PREFIX = ".tmp-"  # the store's garbage collection removes leftovers that start with it


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write `path`'s content to; on success it replaces `path`."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f"{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(os.path.dirname(path) or ".")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """`open(path, mode)` whose content appears under `path` only once the block has succeeded."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)
