"""Compaction of a feature store: many small fragments -> few big ones, and garbage collection.

Safe against a kill at any point: the merged fragment is committed (its manifest lists the
fragments it `supersedes`) before any old file is deleted, and readers ignore superseded manifests.
Do not run it while writers of the same store are live (their uncommitted fragments younger than
`stale_seconds` are left alone, but a concurrent commit could be merged half-way into nothing).
"""
from __future__ import annotations

import numpy as np

from extract.store_io import COMMITS, FRAGMENTS, ArrayReader, axis_of, committed_ids, new_fragment_id
from extract.store_read import FeatureStore, _Frag


def _fragment_bytes(f: _Frag) -> int:
    return sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for s, d in f.arrays.values())


def _merge(st: FeatureStore, group: str, frags: list[_Frag]) -> tuple[list, dict]:
    """Rows of every video whose winning copy lies in `frags`, ordered by video name."""
    src = st._src[group]
    picks = sorted((v, f, i) for f in frags for i, v in enumerate(f.videos) if src[v][0] is f)
    videos = [v for v, _, _ in picks]
    kfc, ts, ac, oc = [], [], [], []
    for _, f, i in picks:
        t, a, o = f.structure(i)
        kfc.append(len(t)), ts.append(t), ac.append(a), oc.append(o)
    arrays = {}
    names = frags[0].arrays
    for n, (shape, dt) in names.items():
        for f in frags:
            if f.arrays.get(n, (None, None))[0] is None or f.arrays[n][0][1:] != shape[1:] or f.arrays[n][1] != dt:
                raise ValueError(f"group {group!r}: array {n!r} differs between fragments {frags[0].id} and {f.id}")
        parts = []
        cache: dict[str, np.ndarray] = {}
        for _, f, i in picks:
            if f.id not in cache:
                z = ArrayReader(st.loc, f.id, n)
                cache[f.id] = np.empty(z.shape, dtype=z.dtype)  # at most target_bytes per bin
                z.read_into(0, z.shape[0], cache[f.id])
            off = f.off[axis_of(n)]
            parts.append(cache[f.id][off[i]:off[i + 1]])
        arrays[n] = np.concatenate(parts) if parts else np.zeros((0,) + tuple(shape[1:]), dtype=dt)
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    return [videos, kfc, cat(ts, np.float64), cat(ac, np.int64), cat(oc, np.int64)], arrays


def compact(path: str, *, target_bytes: int = 1 << 30, stale_seconds: float = 3600.0,
            dry_run: bool = False, log=print) -> dict:
    """Merge each group's fragments into fragments of about `target_bytes`; delete superseded
    and stale uncommitted leftovers. Returns counts of what was (or would be) done."""
    from extract.store import commit_fragment  # late: store imports this module's neighbours

    st = FeatureStore(path)
    loc = st.loc
    report = {"merged": 0, "written": 0, "removed_superseded": 0, "removed_stale": 0}
    for g, frags in sorted(st.fragments.items()):
        bins, cur, size = [], [], 0
        for f in frags:
            b = _fragment_bytes(f)
            if cur and size + b > target_bytes:
                bins.append(cur)
                cur, size = [], 0
            cur.append(f)
            size += b
        if cur:
            bins.append(cur)
        for b in bins:
            dup = any(st._src[g][v][0] is not f for f in b for v in f.videos)
            if len(b) < 2 and not dup:
                continue
            log(f"{g}: merging {len(b)} fragment(s) ({sum(len(f.videos) for f in b)} videos)")
            report["merged"] += len(b)
            report["written"] += 1
            if dry_run:
                continue
            (videos, kfc, ts, ac, oc), arrays = _merge(st, g, b)
            fid = new_fragment_id(g, "c")
            commit_fragment(loc, fid, g, "compact", videos, kfc, ts, ac, oc, arrays, supersedes=[f.id for f in b])
            for f in b:
                loc.remove(f"{COMMITS}/{f.id}.json")
                loc.remove(f"{FRAGMENTS}/{f.id}")
    # Leftovers: manifests/dirs superseded by a commit (a kill after commit), uncommitted dirs of
    # dead writers, temporary manifest files.
    live = {f.id for fs in FeatureStore(path).fragments.values() for f in fs} if not dry_run else \
        {f.id for fs in st.fragments.values() for f in fs}
    for fid in sorted(committed_ids(loc) - live):
        report["removed_superseded"] += 1
        if not dry_run:
            loc.remove(f"{COMMITS}/{fid}.json")
            loc.remove(f"{FRAGMENTS}/{fid}")
    committed = committed_ids(loc)
    for fid in loc.listdir(FRAGMENTS):
        if fid not in committed and fid not in live and loc.age_seconds(f"{FRAGMENTS}/{fid}") >= stale_seconds:
            report["removed_stale"] += 1
            if not dry_run:
                loc.remove(f"{FRAGMENTS}/{fid}")
    for name in loc.listdir(COMMITS):
        if name.startswith(".tmp-") and loc.age_seconds(f"{COMMITS}/{name}") >= stale_seconds and not dry_run:
            loc.remove(f"{COMMITS}/{name}")
    return report
