"""`cache verify [--repair]`: everything a store promises, checked in full (docs/STORE_SCHEMA.md,
"Integrity" and "Tools"): every committed file's size and checksum, each array's zarr.json against
its manifest, the manifests' counts, structure of every group against base, completeness,
duplicates, NaN/Inf, boxes, labels and the label map. `--repair` drops each damaged fragment with its
commit unit (extract/store/compact.py `drop_damaged`, under the compaction lock), so a resumed
extraction or import redoes just those videos.
"""
from __future__ import annotations

import warnings

import numpy as np

from stagecache.extract.ava_io import read_label_map
from stagecache.extract.store import BASE_ARRAYS, Location, StoreError, open_store
from stagecache.extract.store.io import axis_of


def _damage(loc: Location, *, progress: bool, log) -> list[str]:
    """Problems with the committed files of every visible fragment (checksums included)."""
    from tqdm import tqdm

    from stagecache.extract.store.commit import Commits
    from stagecache.extract.store.integrity import fragment_problems

    with warnings.catch_warnings():  # lost data is reported by verify_store itself
        warnings.simplefilter("ignore")
        mans = Commits(loc).visible()
    total = sum(size for m in mans for size, _ in (m.get("files") or {}).values())
    unsummed = [m["fragment"] for m in mans if not m.get("files")]
    if unsummed:
        log(f"{loc.display}: {len(unsummed)} of {len(mans)} fragment(s) have no checksums recorded (written by an "
            f"older stagecache; first {unsummed[0]}): only their shapes and types are checked")
    out: list[str] = []
    with tqdm(total=total, desc="verify checksums", unit="B", unit_scale=True, disable=not progress) as bar:
        for m in mans:
            out += fragment_problems(loc, m, sums=True)
            bar.update(sum(size for size, _ in (m.get("files") or {}).values()))
    return out


def verify_store(path: str, *, label_map: str | None = None, repair: bool = False, progress: bool = True,
                 log=None) -> list[str]:
    """Every problem found (empty list: the store is sound). `repair`: drop damaged fragments (their
    whole commit units) first; what remains is then checked. `log` receives notes that are not
    problems (fragments without checksums, what was repaired)."""
    from stagecache.extract.store.commit import Commits

    log = log or (lambda *_: None)
    loc = Location(path)
    problems: list[str] = []
    try:
        if repair:
            from stagecache.extract.store.compact import drop_damaged
            from stagecache.extract.store.lock import StoreLock

            lock = StoreLock(loc, "c", what="compaction or repair")
            try:
                dropped = drop_damaged(loc, sums=True, log=log)
            finally:
                lock.release()
            log(f"{path}: dropped {len(dropped)} damaged fragment(s); rerun the extraction to redo their videos"
                if dropped else f"{path}: no damaged fragment to drop")
        problems += _damage(loc, progress=progress, log=log)
        with warnings.catch_warnings():  # what open_store warns about is reported below
            warnings.simplefilter("ignore")
            st = open_store(path)
        st.check_values = False  # listed in full below
        c = Commits(st.loc)
    except StoreError as e:
        return problems or [str(e)]
    for m in c.lost():
        fid = m["fragment"]
        problems.append(f"commits/{fid}.json: committed but its data fragments/{fid} is missing "
                        f"({len(m['videos'])} video(s) of group {m['group']}, first {m['videos'][:3]}); "
                        f"`cache compact` removes the manifest, then rerun the extraction")
    if problems and not repair:
        return problems  # damaged files: reading the arrays would only repeat them
    for g, dups in sorted(st.duplicates.items()):
        problems.append(f"group {g}: {len(dups)} video(s) stored more than once (first: {dups[:3]}), e.g. by two "
                        f"writers of one shard; readers use the first copy, `cache compact` drops the others")
    if not st.fragments:
        problems.append(f"no video committed in any group (declared: {sorted(st.groups)}): every video failed, "
                        f"or the writer was killed before its first commit")
        return problems
    a = st.attrs
    if label_map is not None:
        lm = read_label_map(label_map)
        if list(lm.ids) != list(a["label_ids"]):
            problems.append(f"label ids {a['label_ids'][:5]}... ({len(a['label_ids'])}) differ from {label_map} "
                            f"({lm.ids[:5]}..., {len(lm.ids)})")
        elif [str(n) for n in a.get("label_names") or []] != [str(n) for n in lm.names]:  # same ids, renamed classes
            i, have, want = next(((i, h, w) for i, h, w in zip(lm.ids, a.get("label_names") or [], lm.names)
                                  if str(h) != str(w)), (None, a.get("label_names"), lm.names))
            problems.append(f"label names differ from {label_map}: "
                            + (f"id {i} is {have!r} in the store, {want!r} in the label map" if i is not None
                               else f"{len(have or [])} names in the store, {len(want)} in the label map"))
    if "base" not in st.fragments:
        problems.append("no base group (boxes, labels): nothing to train on")
    for g in sorted(st.groups):
        miss = st.missing(g)
        if g not in st.fragments:
            problems.append(f"group {g}: declared but no video committed")
            continue
        if miss:
            problems.append(f"group {g}: {len(miss)} of {len(st.videos)} videos missing (first: {miss[:3]})")
            continue
        try:
            st._check_group(g)
            info = st.array_info(g)
        except StoreError as e:
            problems.append(str(e))
            continue
        if g == "base":
            absent = [n for n in BASE_ARRAYS if n not in info]
            if absent:
                problems.append(f"group base lacks arrays {absent}")
        for n in sorted(info):
            try:
                problems += _check_array(st, g, n)
            except StoreError as e:
                problems.append(str(e))
    if not problems:
        t = st.load({})
        for name, off, total in (("actor", t.kf_actor_offset, st.num_actors), ("object", t.kf_object_offset, st.num_objects)):
            d = np.diff(off.numpy())
            if off[0] != 0 or off[-1] != total or (d < 0).any():
                problems.append(f"kf_{name}_offset is not monotone from 0 to {total}")
        kv, kt = t.kf_video.numpy(), t.kf_time.numpy()
        bad = np.nonzero((np.diff(kv) == 0) & (np.diff(kt) <= 0))[0]
        if len(bad):
            problems.append(f"video {st.videos[kv[bad[0]]]}: timestamps not increasing")
    return problems


def _row_video(st, axis: str, row: int) -> str:
    kf = row if axis == "kf" else int(np.searchsorted((st._kf_act if axis == "actor" else st._kf_obj), row, "right") - 1)
    return st.videos[int(st._kf_video[kf])]


def _check_array(st, g: str, n: str) -> list[str]:
    from stagecache.extract.store.integrity import value_problem
    from stagecache.pipelines.training.split import nonfinite_rows  # (torch) when verify runs, not at `cache --help`

    t = st.load({g: [n]}).data[f"{g}/{n}"]
    x, ax = t.numpy(), axis_of(n)
    out = []
    count, r = nonfinite_rows(t)
    if count:
        out.append(f"{g}/{n}: {count} row(s) with NaN/Inf (first in video {_row_video(st, ax, r)}, row {r})")
    if n.endswith("_labels"):
        L = len(st.attrs["label_ids"])
        if x.ndim != 2 or x.shape[1] != L:
            out.append(f"{g}/{n}: {x.shape[1:]} columns but the label map has {L}")
            return out
    bad = value_problem(n, x)
    if bad is not None:
        out.append(f"{g}/{n}: {bad[0]} (first in video {_row_video(st, ax, bad[1])})")
    return out
