"""Locks of a feature store: one live writer per (store, rank), and a way for compaction to tell a
live writer's uncommitted fragments from a dead one's.

A lock is an exclusive `fcntl.flock` on `<store>/locks/<tag>.lock`, held for the writer's life.
The kernel drops it when the process dies however it dies (kill -9 included), so a lock left by a
killed writer is free again at once: there is no stale-lock guessing, no heartbeat and no unlink
race (lock files are never deleted). Tags: the writer's rank (`0`, `1`, ...), `w` for
`write_group`, `c` for compaction; a fragment id `<group>-r<tag>-...` names its writer's tag.

Locks need a local file system (local disks; NFS with working `flock`). fsspec stores (`s3://`,
`memory://`, ...) have no locks: there one writer per rank and no compaction during writes are the
user's to ensure (docs/STORE_SCHEMA.md).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time

from stagecache.extract.store.io import Location, StoreError

LOCKS = "locks"


def lock_tag_of(fragment_id: str) -> str:
    """'<group>-r<tag>-<time>-<rand>' -> tag (group names hold no '-')."""
    parts = fragment_id.split("-")
    return parts[1][1:] if len(parts) > 1 and parts[1].startswith("r") else ""


class StoreLock:
    """An exclusive lock on (store, tag), taken on construction; a no-op on non-local stores."""

    def __init__(self, loc: Location, tag: str, *, what: str, blocking: bool = False):
        self.loc, self.tag, self._f = loc, tag, None
        if not loc.local:
            return
        path = os.path.join(loc.root, LOCKS, f"{tag}.lock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        f = open(path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "{}"
            f.close()
            try:
                h = json.loads(holder)
            except ValueError:
                h = {}
            raise StoreError(f"{loc.display}: {what} is already being written by pid {h.get('pid', '?')} on "
                             f"{h.get('host', '?')} since {h.get('started', '?')} (lock {LOCKS}/{tag}.lock); "
                             f"one writer per store and rank: wait for it, or use another --shard") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": list(sys.argv)}))
        f.flush()
        self._f = f

    def release(self) -> None:
        if self._f is not None:
            self._f.close()  # closing the descriptor drops the flock
            self._f = None


def try_lock(loc: Location, tag: str) -> StoreLock | None:
    """The lock of `tag` if nobody holds it (its writer is dead or gone), else None (live)."""
    try:
        return StoreLock(loc, tag, what=f"lock {tag}")
    except StoreError:
        return None
