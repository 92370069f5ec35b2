"""Atomic file writes: readers see the old file or the whole new one, never half of it.

One recipe everywhere: write a temporary file in the destination's directory (same file system,
so the rename is atomic), flush it to disk (fsync), `os.replace` it over the final name, then
fsync the directory, so the new name itself survives a power loss (the rename lives in the
directory's entries, which the file's fsync does not flush). A
failure or a kill leaves at most a hidden `.tmp-<hex>-<name>` file behind, never a truncated file
under the final name. The temporary name ends with the final name, so writers that pick a format
from the extension (`np.savez` adds `.npz`, PyAV guesses the container from `.mp4`) still work.
A full disk (`OSError` ENOSPC, or torch's zip writer's `unexpected pos`) becomes a `DiskFullError`,
one line naming the path and the free space; `remove_stale_temps` removes a killed writer's temp files.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import IO, Iterator

from stagecache.core.errors import UserError

__all__ = ["atomic_path", "atomic_open", "atomic_write_bytes", "TMP_PREFIX", "DiskFullError", "is_disk_full",
           "disk_full_error", "disk_full_guard", "remove_stale_temps"]

TMP_PREFIX = ".tmp-"  # the store's garbage collection removes leftovers that start with it


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskFullError(UserError, OSError):
    """The disk filled while writing: one line naming the path and the free space (the file it
    would have replaced, and every store, is left as it was)."""

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC / EDQUOT, or torch's zip writer failing mid-file (`RuntimeError: [enforce fail at
    inline_container.cc:...] . unexpected pos N vs M` or `... file write failed`), which is how
    `torch.save` reports a full disk."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and "inline_container" in text and (
        "unexpected pos" in text or "write failed" in text or "No space left" in text)


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def disk_full_error(path: str | os.PathLike, needed: int | None = None) -> DiskFullError:
    path = os.fspath(path)
    d = path
    while d and not os.path.isdir(d):
        d = os.path.dirname(d)
    try:
        free = _fmt(shutil.disk_usage(d or ".").free) + " free"
    except OSError:
        free = "free space unknown"
    need = f", about {_fmt(needed)} needed" if needed else ""
    return DiskFullError(errno.ENOSPC, f"no space left on the device writing {path} ({free}{need}); free some "
                         f"space and rerun: what was written before is intact")


@contextlib.contextmanager
def disk_full_guard(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk inside the block into a DiskFullError naming `path`."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as e:
        if is_disk_full(e):
            raise disk_full_error(path, needed) from None
        raise


def remove_stale_temps(directory: str | os.PathLike, name: str, older_than: float = 0.0) -> list[str]:
    """Remove `.tmp-<hex>-<name>` files an atomic write of `directory/name` left behind when its
    process was killed (a later run of the same writer calls this). Returns the removed names."""
    out = []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return out
    now = time.time()
    for n in entries:
        if n.startswith(TMP_PREFIX) and n.endswith("-" + name) and len(n) == len(TMP_PREFIX) + 33 + len(name):
            p = os.path.join(directory, n)
            try:
                if now - os.stat(p).st_mtime >= older_than:
                    os.remove(p)
                    out.append(n)
            except FileNotFoundError:
                pass
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[str]:
    """Yield a temporary path to write `path`'s content to; on success it replaces `path`.
    `needed`: about how many bytes it will take, for the message of a full disk (default: the
    size of the file it replaces)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f"{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        # a full disk is one line naming `path`; the old file stays (needed: about its size)
        if needed is None and os.path.isfile(path):
            needed = os.path.getsize(path)
        with disk_full_guard(path, needed):
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
