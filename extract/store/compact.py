"""Compaction of a feature store: many small fragments -> few big ones, and garbage collection.

Safe against a kill at any point: the merged fragment is committed (its manifest lists the
fragments it `supersedes`) before any old file is deleted (data first, manifest last), and readers
ignore superseded manifests. Safe next to live writers of a local store: it merges only committed
fragments, and deletes uncommitted data only of writers whose lock it can take (dead ones; it holds
that lock while deleting, so no new writer of that rank starts meanwhile). `stale_seconds` applies
to those dead writers' leftovers only (and, on fsspec stores without locks, to every leftover).
"""
from __future__ import annotations

import numpy as np

from stagecache.extract.store.commit import Commits, clean_uncommitted, committed_ids, drop_unit, remove_fragment
from stagecache.extract.store.integrity import fragment_problems, open_array
from stagecache.extract.store.io import COMMITS, FRAGMENTS, Location, axis_of, new_fragment_id
from stagecache.extract.store.lock import StoreLock, lock_tag_of, try_lock
from stagecache.extract.store.read import FeatureStore, _Frag
from stagecache.extract.store.writer import commit_fragment


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
                z = open_array(st.loc, f.man, n)
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
    fragments, committed manifests whose data is gone, and dead writers' uncommitted leftovers.
    Returns counts of what was (or would be) done. One compaction per store at a time (lock `c`)."""
    loc = Location(path)
    lock = StoreLock(loc, "c", what="compaction")
    try:
        return _compact_locked(path, loc, target_bytes, stale_seconds, dry_run, log)
    finally:
        lock.release()


def _compact_locked(path, loc, target_bytes, stale_seconds, dry_run, log) -> dict:

    report = {"merged": 0, "written": 0, "removed_superseded": 0, "removed_broken": 0, "removed_damaged": 0,
              "removed_stale": 0, "live_writers": []}
    # Leftovers first (a kill after an earlier merge's commit): a merged manifest is superseded in
    # this run only once nothing it supersedes is left on disk.
    c = Commits(loc)
    for fid in sorted(c.superseded & (set(c.manifests) | c.dirs)):
        report["removed_superseded"] += 1
        if not dry_run:
            remove_fragment(loc, fid)
    for m in c.lost():
        fid = m["fragment"]
        log(f"{m['group']}: {COMMITS}/{fid}.json has no data (videos {m['videos'][:3]}...): removed; "
            f"rerun the extraction to redo its {len(m['videos'])} video(s)")
        report["removed_broken"] += 1
        if not dry_run:
            loc.remove(f"{COMMITS}/{fid}.json")
    report["removed_damaged"] = len(drop_damaged(loc, dry_run=dry_run, log=log))
    st = FeatureStore(path)
    log(f"{path}: merging fragments of {len(st.fragments)} group(s) into fragments of about {target_bytes >> 20} MiB")
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
                remove_fragment(loc, f.id)
    _remove_uncommitted(loc, stale_seconds, dry_run, report, log)
    return report


def drop_damaged(loc: Location, *, sums: bool = False, dry_run: bool = False, log=print) -> list[str]:
    """Drop each visible fragment whose files are damaged (missing, resized, with `sums` a wrong
    checksum, an array's zarr.json that disagrees with its manifest) with its whole commit unit
    (commit.drop_unit), so a resumed extraction redoes just those videos. Returns the ids dropped.
    The caller holds the compaction lock. An unreadable manifest is removed: its data is then
    uncommitted and the rest of its unit invisible (a cut-short unit, cleaned like one)."""
    dropped: list[str] = []
    for name in loc.listdir(COMMITS):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            m = loc.read_json(f"{COMMITS}/{name}")
        except FileNotFoundError:
            continue
        except ValueError:
            m = None
        if not isinstance(m, dict) or not isinstance(m.get("fragment"), str):
            log(f"{loc.display}: {COMMITS}/{name} is not a readable manifest: {'would remove' if dry_run else 'removed'} "
                f"it (its videos are no longer committed; rerun the extraction to redo them)")
            dropped.append(name[:-5])
            if not dry_run:
                loc.remove(f"{COMMITS}/{name}")
    c = Commits(loc)
    for m in c.visible():
        fid = m["fragment"]
        if fid in dropped:
            continue
        bad = fragment_problems(loc, m, sums=sums)
        if not bad:
            continue
        unit = [u for u in (m.get("unit") or [fid]) if u in c.manifests or u in c.dirs]
        log(f"{bad[0]}: {'would drop' if dry_run else 'dropped'} its commit unit {unit} "
            f"({len(m['videos'])} video(s), first {m['videos'][:3]}); rerun the extraction to redo them")
        dropped += unit if dry_run else drop_unit(loc, c, fid)
    return dropped


def _remove_uncommitted(loc, stale_seconds, dry_run, report, log) -> None:
    """Data without a manifest (and cut-short flushes) of writers known to be dead."""
    committed = committed_ids(loc)
    tmp = [n for n in loc.listdir(COMMITS) if n.startswith(".tmp-")]  # .tmp-<32 hex>-<fragment>.json
    by_tag: dict[str, list[str]] = {}
    for fid in loc.listdir(FRAGMENTS):
        if fid not in committed:
            by_tag.setdefault(lock_tag_of(fid), []).append(fid)
    for n in tmp:
        by_tag.setdefault(lock_tag_of(n[38:-5]), [])
    for tag in sorted(by_tag):
        held = None
        if loc.local and tag not in ("c", ""):  # "c": ours, held; "": no writer tag, age decides
            held = try_lock(loc, tag)
            if held is None:
                log(f"writer {tag} is live: its {len(by_tag[tag])} uncommitted fragment(s) are left alone")
                report["live_writers"].append(tag)
                continue
        try:
            old = {f for f in by_tag[tag] if loc.age_seconds(f"{FRAGMENTS}/{f}") >= stale_seconds}
            report["removed_stale"] += len(old)
            if not dry_run:
                clean_uncommitted(loc, lambda f, tag=tag: lock_tag_of(f) == tag and
                                  (f in old or f in committed))
                for n in tmp:
                    if lock_tag_of(n[38:-5]) == tag and loc.age_seconds(f"{COMMITS}/{n}") >= stale_seconds:
                        loc.remove(f"{COMMITS}/{n}")
        finally:
            if held is not None:
                held.release()
