"""The Zarr v3 feature store: the one contract between extraction and the heads.

Layout and guarantees: docs/STORE_SCHEMA.md. Writers buffer whole videos and flush them as
fragments (one per group, one commit unit: extract/store/commit.py) that become visible only when
every manifest of the unit is committed, so any number of ranks can write one store at once (one
live writer per rank: extract/store/lock.py) and a killed writer leaves nothing half-visible in any
group; `done(group)` says what to skip on a rerun. Readers (`open_store`) assemble every group in
(video, timestamp) order.
"""
from __future__ import annotations

import os
import re
import socket
import sys
import time

import numpy as np

from stagecache.extract.store.commit import clean_uncommitted, list_manifests, remove_fragment, write_manifests
from stagecache.extract.store.io import (META, SCHEMA_VERSION, Location, StoreError, axis_of, new_fragment_id,
                              project_version, read_json_checked, read_root_attrs, write_fragment)
from stagecache.extract.store.integrity import CHECKSUM, fragment_files, stored_dtype
from stagecache.extract.store.lock import StoreLock, lock_tag_of
from stagecache.extract.store.read import open_store

BASE_ARRAYS = ("actor_box", "actor_score", "actor_is_gt", "actor_labels", "actor_track",
               "object_box", "object_class", "object_score")
# Attribute keys that may differ between ranks / reruns of one job without meaning different data.
VOLATILE_ATTRS = frozenset({"command_line", "argv", "rank", "world_size", "host", "created", "started_at"})
_GROUP_RE = re.compile(r"^[A-Za-z0-9_.]+$")


def cast_for_store(name: str, a: np.ndarray) -> np.ndarray:
    """The array in its stored dtype (docs/STORE_SCHEMA.md, dtypes; the rule: integrity.stored_dtype),
    refusing labels other than 0/1 and finite floats beyond float16's range."""
    a = np.asarray(a)
    dt = stored_dtype(name, a.dtype)
    if name.endswith("_labels") and a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be multi-hot 0/1")
    out = a.astype(dt, copy=False)
    if dt == np.float16 and a.dtype != np.float16 and out.size and not np.isfinite(out).all() and np.isfinite(a).all():
        raise ValueError(f"{name} has values beyond the float16 range (|x| > 65504)")
    return out


def ensure_root(loc: Location, *, split: str, label_ids, label_names, object_classes=None) -> dict:
    """Create the root once (idempotent under concurrent creation) or check it matches."""
    want = {"schema_version": SCHEMA_VERSION, "split": split, "label_ids": [int(x) for x in label_ids],
            "label_names": [str(x) for x in label_names],
            "object_classes": None if object_classes is None else [str(x) for x in object_classes],
            "created_by": project_version()}
    if len(want["label_ids"]) != len(want["label_names"]):
        raise ValueError(f"label_ids ({len(want['label_ids'])}) and label_names ({len(want['label_names'])}) differ in length")
    for _ in range(3):
        if not loc.exists("zarr.json"):
            loc.write_json_atomic("zarr.json", {"zarr_format": 3, "node_type": "group",
                                                "attributes": {"stagecache": want}})
            continue  # read back: another rank may have created it at the same time
        have = read_root_attrs(loc)
        diff = [k for k in ("split", "label_ids", "label_names") if have.get(k) != want[k]]
        if have.get("object_classes") is not None and want["object_classes"] is not None \
                and have["object_classes"] != want["object_classes"]:
            diff.append("object_classes")
        if diff:
            raise StoreError(f"{loc.display}: existing store differs from this writer in {diff}")
        if have.get("object_classes") is None and want["object_classes"] is not None:
            # The class list arrives with the first object detections; recorded once.
            have = {**have, "object_classes": want["object_classes"]}
            loc.write_json_atomic("zarr.json", {"zarr_format": 3, "node_type": "group",
                                                "attributes": {"stagecache": have}})
        return have
    raise StoreError(f"{loc.display}: could not create the store root")


def _declare_meta(loc: Location, name: str, attrs: dict, allow_mismatch: bool, replace: bool = False) -> None:
    if not _GROUP_RE.match(name):
        raise ValueError(f"group name {name!r}: use letters, digits, '_' and '.' only")
    meta = {"group": name, "attrs": attrs, "schema_version": SCHEMA_VERSION,
            "project_version": project_version()}
    sub = f"{META}/{name}.json"
    if loc.exists(sub) and not replace:
        stored = read_json_checked(loc, sub, "group metadata")
        if stored.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{loc.display}: {sub} has schema_version {stored.get('schema_version')}, this "
                             f"stagecache writes schema version {SCHEMA_VERSION} (docs/STORE_SCHEMA.md)")
        old = stored.get("attrs")
        if not isinstance(old, dict):
            raise StoreError(f"{loc.display}: {sub} is not group metadata (no 'attrs'): a damaged file")
        keys = sorted(k for k in set(old) | set(attrs) if k not in VOLATILE_ATTRS and old.get(k) != attrs.get(k))
        if keys and not allow_mismatch:
            raise StoreError(f"{loc.display}: group {name!r} was written with different attributes {keys} "
                             f"(stored {[old.get(k) for k in keys]}, now {[attrs.get(k) for k in keys]}); "
                             f"use a new group name or allow_mismatch=True")
        return
    loc.write_json_atomic(sub, meta)


def _manifest(fid, group, rank, videos, kf_counts, ts, ac, oc, arrays, supersedes=(), unit=None,
              files=None) -> dict:
    # `files`/`checksum`: what the fragment holds, for readers' size checks and `cache verify`'s
    # checksums (extract/store/integrity.py); an additive key older readers ignore (no version bump).
    return {"fragment": fid, "group": group, "rank": rank, "schema_version": SCHEMA_VERSION,
            "files": files or {}, "checksum": CHECKSUM, "unit": list(unit) if unit else [fid],
            "videos": list(videos), "kf_counts": [int(x) for x in kf_counts],
            "timestamps": [float(x) for x in ts], "actor_counts": [int(x) for x in ac],
            "object_counts": [int(x) for x in oc],
            "arrays": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in arrays.items()},
            "supersedes": list(supersedes), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "writer": {"pid": os.getpid(), "host": socket.gethostname(), "argv": list(sys.argv)}}


def commit_fragment(loc: Location, fid: str, group: str, rank, videos, kf_counts, ts, ac, oc,
                    arrays: dict[str, np.ndarray], supersedes=(), hook=None) -> None:
    """One fragment as a unit of its own (compaction, write_group): data first, manifest last."""
    write_fragment(loc, fid, arrays, hook=hook)
    files = fragment_files(loc, fid, arrays)
    write_manifests(loc, [_manifest(fid, group, rank, videos, kf_counts, ts, ac, oc, arrays, supersedes,
                                    files=files)])


class _Buffer:
    def __init__(self):
        self.videos, self.ts, self.ac, self.oc = [], [], [], []
        self.arrays: dict[str, list[np.ndarray]] = {}
        self.spec: dict[str, tuple] | None = None
        self.nbytes = 0


class StoreWriter:
    """Writes whole videos of one split; safe with one writer per rank on the same store (a second
    live writer of the same rank is refused with StoreError; see extract/store/lock.py)."""

    def __init__(self, path: str, *, split: str, label_ids: list[int], label_names: list[str],
                 object_classes: list[str] | None = None, rank: int = 0,
                 flush_bytes: int = 64 << 20, flush_seconds: float = 60.0):
        self.loc = Location(path)
        self.root_attrs = ensure_root(self.loc, split=split, label_ids=label_ids, label_names=label_names,
                                      object_classes=object_classes)
        self.rank, self.flush_bytes, self.flush_seconds = int(rank), int(flush_bytes), float(flush_seconds)
        self._lock = StoreLock(self.loc, str(self.rank), what=f"rank {self.rank}")
        # Uncommitted fragments of this rank (data without manifests, flushes cut short) come from a
        # killed earlier run: the lock says no other live process writes them, so they can go.
        tag = str(self.rank)
        clean_uncommitted(self.loc, lambda fid: lock_tag_of(fid) == tag)
        self._buf: dict[str, _Buffer] = {}
        self._session: dict[str, set[str]] = {}
        self._last_flush = time.monotonic()
        self._hook = None  # test hook: called after each array of a fragment is written
        self._closed = False
        self.on_commit = None  # called with the videos of each committed flush (a progress bar)

    def declare_group(self, name: str, attrs: dict, allow_mismatch: bool = False, replace: bool = False) -> None:
        """Record the group's attributes (once per store; `replace`: overwrite the record, for a
        group that holds no committed data, e.g. `extract features` after a failed first run)."""
        _declare_meta(self.loc, name, dict(attrs), allow_mismatch, replace=replace)
        self._buf.setdefault(name, _Buffer())
        self._session.setdefault(name, set())

    def done(self, group: str) -> set[str]:
        """Videos committed for `group` (by any writer, any run)."""
        out = {v for m in list_manifests(self.loc) if m["group"] == group for v in m["videos"]}
        return out | self._session.get(group, set())

    def add_video(self, group: str, video: str, *, timestamps, actor_counts, object_counts,
                  arrays: dict[str, np.ndarray]) -> None:
        """One group's rows of one video (see add_groups to commit several groups as one)."""
        self.add_groups(video, timestamps=timestamps, actor_counts=actor_counts, object_counts=object_counts,
                        groups={group: arrays})

    def add_groups(self, video: str, *, timestamps, actor_counts, object_counts,
                   groups: dict[str, dict[str, np.ndarray]]) -> None:
        """The rows of one video in several groups (e.g. base and a backbone), same structure.

        They are buffered together, so the flush that commits them commits all of them (one unit,
        docs/STORE_SCHEMA.md): the video is then done in every group or in none. Everything is
        checked before anything is buffered."""
        if self._closed:
            raise StoreError("writer is closed")
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        ac = np.asarray(actor_counts, dtype=np.int64).reshape(-1)
        oc = np.asarray(object_counts, dtype=np.int64).reshape(-1)
        if len(ac) != len(ts) or len(oc) != len(ts):
            raise ValueError(f"video {video!r}: {len(ts)} timestamps but {len(ac)} actor_counts, {len(oc)} object_counts")
        if len(ts) > 1 and not np.all(np.diff(ts) > 0):
            raise ValueError(f"video {video!r}: timestamps must be strictly increasing")
        if (ac < 0).any() or (oc < 0).any():
            raise ValueError(f"video {video!r}: negative counts")
        rows = {"actor": int(ac.sum()), "object": int(oc.sum()), "kf": len(ts)}
        checked = {g: self._check_arrays(g, video, rows, arrays) for g, arrays in groups.items()}
        for g, (cast, spec) in checked.items():
            b = self._buf[g]
            if b.spec is None:
                b.spec = spec
            b.videos.append(video), b.ts.append(ts), b.ac.append(ac), b.oc.append(oc)
            for n, c in cast.items():
                b.arrays.setdefault(n, []).append(np.ascontiguousarray(c))
                b.nbytes += c.nbytes
        if (sum(x.nbytes for x in self._buf.values()) >= self.flush_bytes
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def _check_arrays(self, group: str, video: str, rows: dict, arrays: dict[str, np.ndarray]):
        """(arrays cast to their stored dtypes, their spec); raises on anything wrong."""
        if group not in self._buf:
            raise StoreError(f"declare_group({group!r}, attrs) before add_video")
        b = self._buf[group]
        if video in b.videos or video in self._session[group]:
            raise StoreError(f"video {video!r} already written to group {group!r} by this writer")
        if group == "base":
            miss = [n for n in BASE_ARRAYS if n not in arrays]
            if miss:
                raise ValueError(f"video {video!r}: group 'base' needs arrays {miss}")
        cast = {}
        for n, a in arrays.items():
            try:
                c = cast_for_store(n, a)
            except ValueError as e:
                raise ValueError(f"video {video!r}, group {group!r}: {e}") from None
            if c.ndim == 0 or c.shape[0] != rows[axis_of(n)]:
                raise ValueError(f"video {video!r}, group {group!r}: {n} has shape {c.shape}, "
                                 f"expected {rows[axis_of(n)]} rows")
            cast[n] = c
        if "actor_labels" in cast and cast["actor_labels"].shape[1:] != (len(self.root_attrs["label_ids"]),):
            raise ValueError(f"video {video!r}: actor_labels has {cast['actor_labels'].shape[1:]} columns, "
                             f"the label map has {len(self.root_attrs['label_ids'])}")
        spec = {n: (c.shape[1:], c.dtype) for n, c in cast.items()}
        if b.spec is not None and spec != b.spec:
            raise ValueError(f"video {video!r}, group {group!r}: arrays {spec} differ from earlier videos {b.spec}")
        return cast, spec

    def flush(self) -> None:
        """Commit every buffered video as one unit: one fragment per group, data of all of them
        first, then their manifests, each naming the whole unit."""
        pending = [(g, b) for g, b in self._buf.items() if b.videos]
        if not pending:
            self._last_flush = time.monotonic()
            return
        ids = [new_fragment_id(g, self.rank) for g, _ in pending]
        mans = []
        for fid, (g, b) in zip(ids, pending):
            arrays = {n: np.concatenate(xs) for n, xs in b.arrays.items()}
            write_fragment(self.loc, fid, arrays, hook=self._hook)
            files = fragment_files(self.loc, fid, arrays)  # sizes and checksums, from the arrays in memory
            mans.append(_manifest(fid, g, self.rank, b.videos, [len(t) for t in b.ts], np.concatenate(b.ts),
                                  np.concatenate(b.ac), np.concatenate(b.oc), arrays, unit=ids, files=files))
        write_manifests(self.loc, mans)
        committed = list(dict.fromkeys(v for _, b in pending for v in b.videos))
        for g, b in pending:
            self._session[g].update(b.videos)
            self._buf[g] = _Buffer()
            self._buf[g].spec = b.spec
        self._last_flush = time.monotonic()
        if self.on_commit is not None:
            self.on_commit(committed)

    def close(self) -> None:
        """Commit what is buffered and release the rank's lock (also when the commit fails)."""
        if not self._closed:
            try:
                self.flush()
            finally:
                self._closed = True
                self._lock.release()

    def __enter__(self) -> "StoreWriter":
        return self

    def close_quietly(self) -> None:
        """close() while another error is on its way: whatever is buffered is whole videos, so keep
        it, but never hide the original error."""
        try:
            self.close()
        except Exception:
            pass

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close_quietly()


def write_group(path, group: str, attrs: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write (or replace) a derived group from whole-split arrays in Tables order.

    The new data is one fragment whose manifest supersedes the group's old fragments, so readers
    see either the old or the new group, never a mix. Calls on one store run one at a time (lock
    `w`, waited for), so compaction knows a live write_group's fragment from a dead one's."""
    lock = StoreLock(Location(path), "w", what="write_group", blocking=True)
    try:
        _write_group_locked(path, group, attrs, arrays)
    finally:
        lock.release()


def _write_group_locked(path, group: str, attrs: dict, arrays: dict[str, np.ndarray]) -> None:
    st = open_store(path)
    if "base" not in st.fragments:
        raise StoreError(f"{st.path}: write_group({group!r}) needs the base group first")
    if group == "base":
        raise StoreError("write_group cannot replace 'base'")
    rows = {"actor": st.num_actors, "object": st.num_objects, "kf": st.num_keyframes}
    cast = {}
    for n, a in arrays.items():
        c = cast_for_store(n, a)
        if c.ndim == 0 or c.shape[0] != rows[axis_of(n)]:
            raise ValueError(f"write_group({group!r}): {n} has shape {c.shape}, the store has "
                             f"{rows[axis_of(n)]} {axis_of(n)} rows")
        cast[n] = np.ascontiguousarray(c)
    loc = st.loc
    if not _GROUP_RE.match(group):
        raise ValueError(f"group name {group!r}: use letters, digits, '_' and '.' only")
    old = [f.id for f in st.fragments.get(group, [])]
    kfc = np.diff(st._goff["kf"])
    fid = new_fragment_id(group, "w")
    commit_fragment(loc, fid, group, "w", st.videos, kfc, st._ts, st._ac, st._oc, cast, supersedes=old)
    _declare_meta(loc, group, dict(attrs), allow_mismatch=True, replace=True)
    for o in old:  # now unreachable; a kill here leaves them for `cache compact`
        remove_fragment(loc, o)


def estimate_bytes(num_keyframes: int, actors_per_kf: float, objects_per_kf: float, *,
                   num_labels: int = 80, pooled_dim: int = 0, roi_shape: tuple[int, int, int] | None = None,
                   temporal_shape: tuple[int, int] | None = None,
                   context_shape: tuple[int, int, int] | None = None, object_feature_dim: int = 0,
                   include_base: bool = True) -> int:
    """Approximate bytes on disk (uncompressed) for a store of this size.

    roi_shape = (C, K, K), temporal_shape = (T, C), context_shape = (C, H, W)."""
    A = num_keyframes * actors_per_kf
    O = num_keyframes * objects_per_kf
    total = 0.0
    if include_base:
        # box f32 x4, score f32, is_gt bool, labels u8, track i64; object box, class i64, score.
        total += A * (16 + 4 + 1 + num_labels + 8) + O * (16 + 8 + 4 + 2 * object_feature_dim)
        total += num_keyframes * 40  # manifest entries (timestamps, counts)
    total += A * 2 * pooled_dim
    if roi_shape:
        total += A * 2 * int(np.prod(roi_shape))
    if temporal_shape:
        total += A * 2 * int(np.prod(temporal_shape))
    if context_shape:
        total += num_keyframes * 2 * int(np.prod(context_shape))
    return int(total)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
