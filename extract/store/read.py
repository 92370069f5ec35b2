"""Reading side of the feature store: `FeatureStore`, `Tables`, `open_store`."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stagecache.core.timekeys import timestamp_keys
from stagecache.extract.store.commit import list_manifests
from stagecache.extract.store.integrity import (CHECKED_VALUES, REPAIR_HINT, manifest_problems, open_array,
                                                value_problem)
from stagecache.extract.store.io import (META, SCHEMA_VERSION, Location, StoreError, axis_of,
                              read_json_checked, read_root_attrs)

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class Tables:
    """A whole split (or a selection of its groups) as contiguous tensors."""

    video_names: list[str]
    kf_video: "Tensor"  # (K,) long: index into video_names
    kf_time: "Tensor"  # (K,) float64 seconds
    kf_actor_offset: "Tensor"  # (K+1,) long: actors of keyframe k are rows [off[k], off[k+1])
    kf_object_offset: "Tensor"  # (K+1,) long
    data: dict[str, "Tensor"] = field(default_factory=dict)  # "group/array"
    actor_kf: "Tensor" = None  # (A,) long
    object_kf: "Tensor" = None  # (O,) long


class _Frag:
    """One committed fragment, as described by its manifest."""

    def __init__(self, man: dict, loc: Location):
        bad = manifest_problems(loc, man)  # counts, shapes and dtypes agree (no data read)
        if bad:
            raise StoreError(f"{bad[0]}; {REPAIR_HINT}")
        self.id = man["fragment"]
        self.group = man["group"]
        self.man = man
        self.videos = list(man["videos"])
        kfc = np.asarray(man["kf_counts"], dtype=np.int64)
        self.ts = np.asarray(man["timestamps"], dtype=np.float64)
        self.ac = np.asarray(man["actor_counts"], dtype=np.int64)
        self.oc = np.asarray(man["object_counts"], dtype=np.int64)
        self.kf_off = np.concatenate(([0], np.cumsum(kfc)))  # per video, (V+1,)
        self.kf_act = np.concatenate(([0], np.cumsum(self.ac)))  # per keyframe, (K+1,)
        self.kf_obj = np.concatenate(([0], np.cumsum(self.oc)))
        self.off = {"kf": self.kf_off, "actor": self.kf_act[self.kf_off], "object": self.kf_obj[self.kf_off]}
        self.arrays = {n: (tuple(d["shape"]), d["dtype"]) for n, d in man["arrays"].items()}

    def structure(self, i: int):
        a, b = self.kf_off[i], self.kf_off[i + 1]
        return self.ts[a:b], self.ac[a:b], self.oc[a:b]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.repeat(starts - first, lengths) + np.arange(total, dtype=np.int64)


class FeatureStore:
    """A committed view of a store, taken when opened (later commits need a new open_store)."""

    def __init__(self, path_or_url: str):
        self.loc = Location(path_or_url)
        self.path = self.loc.display
        self.attrs: dict = read_root_attrs(self.loc)
        self.groups: dict[str, dict] = {}
        for name in self.loc.listdir(META):
            if name.endswith(".json") and not name.startswith("."):
                m = read_json_checked(self.loc, f"{META}/{name}", "group metadata")
                if not isinstance(m.get("attrs"), dict) or not isinstance(m.get("group"), str):
                    raise StoreError(f"{self.path}: {META}/{name} is not group metadata (no 'group'/'attrs'): "
                                     f"a damaged file")
                if m.get("schema_version") != SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: {META}/{name} has schema_version {m.get('schema_version')}, "
                                     f"this stagecache reads schema version {SCHEMA_VERSION} (docs/STORE_SCHEMA.md)")
                self.groups[m["group"]] = {**m["attrs"], "schema_version": m["schema_version"],
                                           "project_version": m.get("project_version")}
        ids = self.attrs.get("label_ids")
        if not isinstance(ids, list) or len(set(map(str, ids))) != len(ids) \
                or len(ids) != len(self.attrs.get("label_names") or []):
            raise StoreError(f"{self.path}: zarr.json: label_ids must be unique ids, one per label name "
                             f"(label_ids {ids!r:.120}, {len(self.attrs.get('label_names') or [])} names)")
        self.fragments: dict[str, list[_Frag]] = {}
        for man in list_manifests(self.loc):
            self.fragments.setdefault(man["group"], []).append(_Frag(man, self.loc))
            self.groups.setdefault(man["group"], {})
        # video -> (fragment, index in fragment); the smallest fragment id wins a duplicate.
        self._src: dict[str, dict[str, tuple[_Frag, int]]] = {}
        self.duplicates: dict[str, list[str]] = {}  # group -> videos held by more than one fragment
        for g, frags in self.fragments.items():
            src, dups = {}, []
            for f in frags:
                for i, v in enumerate(f.videos):
                    if v in src:
                        dups.append(v)
                    else:
                        src[v] = (f, i)
            if dups:
                self.duplicates[g] = sorted(set(dups))
                warnings.warn(f"{self.path}: group {g!r} holds {len(dups)} video(s) twice (e.g. {dups[0]!r}); "
                              f"using the copy in the fragment with the smallest id; `cache compact` drops the others")
            self._src[g] = src
        self._build_structure()
        self._open: dict[tuple[str, str], Any] = {}
        self.check_values = True  # load()/keyframe() refuse values the schema forbids (verify: False, it lists them)

    # -- structure ------------------------------------------------------------------------------
    def _structure_source(self, v: str) -> tuple[_Frag, int]:
        if "base" in self._src:
            return self._src["base"][v]
        for g in sorted(self._src):
            if v in self._src[g]:
                return self._src[g][v]
        raise KeyError(v)

    def _build_structure(self) -> None:
        if "base" in self._src:
            vids = set(self._src["base"])
        else:
            vids = set().union(*[set(s) for s in self._src.values()]) if self._src else set()
        self.videos: list[str] = sorted(vids)
        ts, ac, oc, kfc = [], [], [], []
        for v in self.videos:
            f, i = self._structure_source(v)
            t, a, o = f.structure(i)
            ts.append(t), ac.append(a), oc.append(o), kfc.append(len(t))
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        self._ts, self._ac, self._oc = cat(ts, np.float64), cat(ac, np.int64), cat(oc, np.int64)
        kfc = np.asarray(kfc, dtype=np.int64)
        self._kf_act = np.concatenate(([0], np.cumsum(self._ac)))
        self._kf_obj = np.concatenate(([0], np.cumsum(self._oc)))
        v_kf = np.concatenate(([0], np.cumsum(kfc)))
        self._goff = {"kf": v_kf, "actor": self._kf_act[v_kf], "object": self._kf_obj[v_kf]}
        self._kf_video = np.repeat(np.arange(len(self.videos)), kfc)
        self._vindex = {v: i for i, v in enumerate(self.videos)}
        self.num_keyframes = int(v_kf[-1])
        self.num_actors = int(self._kf_act[-1])
        self.num_objects = int(self._kf_obj[-1])

    def check_files(self, groups=None) -> None:
        """StoreError on the first damaged fragment of `groups` (default: all): a missing or resized
        file, an array's zarr.json that disagrees with its manifest. A stat per file, no data read:
        for a command that must know every store is sound before it writes into any (write-bank)."""
        from stagecache.extract.store.integrity import fragment_problems

        for g in sorted(self.fragments if groups is None else groups):
            for f in self.fragments.get(g, []):
                bad = fragment_problems(self.loc, f.man)
                if bad:
                    raise StoreError(f"{bad[0]}; {REPAIR_HINT}")

    def missing(self, group: str) -> list[str]:
        """Videos of the store (base) that `group` does not hold."""
        src = self._src.get(group, {})
        return [v for v in self.videos if v not in src]

    def _check_group(self, group: str) -> None:
        if group not in self.groups:
            raise StoreError(f"{self.path}: no group {group!r}; groups: {sorted(self.groups)}")
        miss = self.missing(group)
        if miss:
            raise StoreError(f"{self.path}: group {group!r} lacks {len(miss)} of {len(self.videos)} videos "
                             f"(first: {miss[:3]}); finish or resume its extraction")
        goff = self._goff["kf"]
        for v, (f, i) in self._src.get(group, {}).items():
            if v not in self._vindex:
                continue  # a video only this group holds: not part of the split's tables
            sf, si = self._structure_source(v)
            if sf is f:
                continue
            gi = self._vindex[v]
            a, b = goff[gi], goff[gi + 1]
            t, ac, oc = f.structure(i)
            if (len(t) != b - a or not np.array_equal(timestamp_keys(t), timestamp_keys(self._ts[a:b]))
                    or not np.array_equal(ac, self._ac[a:b]) or not np.array_equal(oc, self._oc[a:b])):
                raise StoreError(f"{self.path}: video {v!r}: group {group!r} has keyframes/actor/object counts "
                                 f"that differ from the structure group (base); re-extract that video")

    def array_info(self, group: str) -> dict[str, tuple[tuple[int, ...], str]]:
        """name -> (shape over the videos the group holds, dtype)."""
        if group not in self.groups:
            raise StoreError(f"{self.path}: no group {group!r}; groups: {sorted(self.groups)}")
        info: dict[str, tuple[tuple[int, ...], str]] = {}
        for f in self.fragments.get(group, []):
            used = [i for i, v in enumerate(f.videos) if self._src[group][v][0] is f]
            for n, (shape, dt) in f.arrays.items():
                off = f.off[axis_of(n)]
                rows = int(sum(off[i + 1] - off[i] for i in used))
                if n in info:
                    old_shape, old_dt = info[n]
                    if old_shape[1:] != shape[1:] or old_dt != dt:
                        raise StoreError(f"{self.path}: group {group!r} array {n!r} is {old_dt}{list(old_shape[1:])} "
                                         f"in one fragment and {dt}{list(shape[1:])} in {f.id}")
                    rows += old_shape[0]
                info[n] = ((rows,) + tuple(shape[1:]), dt)
        return info

    # -- reading --------------------------------------------------------------------------------
    def _select(self, select: dict[str, list[str] | None] | None) -> dict[str, list[str]]:
        if select is None:
            select = {g: None for g in sorted(self.fragments)}
        out = {}
        for g, names in select.items():
            info = self.array_info(g)
            names = sorted(info) if names is None else list(names)
            bad = [n for n in names if n not in info]
            if bad:
                raise StoreError(f"{self.path}: group {g!r} has no array(s) {bad}; it has {sorted(info)}")
            out[g] = names
        return out

    def load(self, select: dict[str, list[str] | None] | None = None, device="cpu") -> Tables:
        """The selected groups (default: all) as contiguous tensors in (video, timestamp) order."""
        import torch

        sel = self._select(select)
        for g in sel:
            self._check_group(g)
        data = {}
        for g, names in sel.items():
            info = self.array_info(g)
            for n in names:
                shape, dt = info[n]
                ax = axis_of(n)
                goff = self._goff[ax]
                # Allocated by torch, not numpy: numpy madvises big arrays into transparent huge
                # pages, whose allocation stalled loading 2-5x on a busy machine (bench_store.py).
                tdt = torch.from_numpy(np.empty(0, dtype=dt)).dtype
                out_t = torch.empty((int(goff[-1]),) + tuple(shape[1:]), dtype=tdt)
                out = out_t.numpy()
                for f in self.fragments.get(g, []):
                    try:
                        self._copy_fragment(g, f, n, goff, out)
                    except FileNotFoundError:
                        raise StoreError(f"{self.path}: group {g!r} array {n!r}: fragment {f.id} was removed after "
                                         f"the store was opened (a `cache compact` meanwhile?); open it again") from None
                if self.check_values and n.endswith(CHECKED_VALUES):  # small arrays: one pass over them is cheap
                    self._check_values(g, n, out, 0)
                data[f"{g}/{n}"] = out_t.to(device)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        return Tables(video_names=list(self.videos), kf_video=t(self._kf_video.astype(np.int64)),
                      kf_time=t(self._ts), kf_actor_offset=t(self._kf_act.astype(np.int64)),
                      kf_object_offset=t(self._kf_obj.astype(np.int64)), data=data,
                      actor_kf=t(np.repeat(np.arange(self.num_keyframes), self._ac)),
                      object_kf=t(np.repeat(np.arange(self.num_keyframes), self._oc)))

    def _copy_fragment(self, g: str, f: _Frag, name: str, goff: np.ndarray, out: np.ndarray) -> None:
        src = self._src[g]
        local = np.array([i for i, v in enumerate(f.videos) if src[v][0] is f and v in self._vindex], dtype=np.int64)
        if len(local) == 0:
            return
        glob = np.array([self._vindex[f.videos[i]] for i in local], dtype=np.int64)
        loff = f.off[axis_of(name)]
        z = open_array(self.loc, f.man, name)
        if len(local) == len(f.videos) and np.all(np.diff(glob) == 1) and np.all(np.diff(local) == 1):
            # The common case (one writer, or a compacted store): one contiguous block, read in place.
            z.read_into(int(loff[local[0]]), int(loff[local[-1] + 1]), out[goff[glob[0]]:goff[glob[-1] + 1]])
            return
        tmp = np.empty(z.shape, dtype=z.dtype)
        z.read_into(0, z.shape[0], tmp)
        lengths = loff[local + 1] - loff[local]
        out[_ranges(goff[glob], lengths)] = tmp[_ranges(loff[local], lengths)]

    def keyframe(self, i: int, select: dict[str, list[str] | None] | None = None) -> dict:
        """Keyframe i (global index, as in load()) read lazily: numpy arrays under 'group/array'
        plus 'video', 'timestamp', 'actor_rows' and 'object_rows' (global row ranges)."""
        if not 0 <= i < self.num_keyframes:
            raise IndexError(f"keyframe {i} out of range [0, {self.num_keyframes})")
        vi = int(self._kf_video[i])
        v = self.videos[vi]
        j = i - int(self._goff["kf"][vi])
        out: dict[str, Any] = {"video": v, "timestamp": float(self._ts[i]),
                               "actor_rows": (int(self._kf_act[i]), int(self._kf_act[i + 1])),
                               "object_rows": (int(self._kf_obj[i]), int(self._kf_obj[i + 1]))}
        for g, names in self._select(select).items():
            if v not in self._src.get(g, {}):
                raise StoreError(f"{self.path}: group {g!r} lacks video {v!r}")
            f, li = self._src[g][v]
            lk = int(f.kf_off[li]) + j
            for n in names:
                key = (f.id, n)
                if key not in self._open:
                    self._open[key] = open_array(self.loc, f.man, n)
                z = self._open[key]
                ax = axis_of(n)
                if ax == "kf":
                    r0, r1 = lk, lk + 1
                else:
                    off = f.kf_act if ax == "actor" else f.kf_obj
                    r0, r1 = int(off[lk]), int(off[lk + 1])
                rows = np.empty((r1 - r0,) + z.shape[1:], dtype=z.dtype)
                z.read_into(r0, r1, rows)
                if self.check_values and n.endswith(CHECKED_VALUES):
                    self._check_values(g, n, rows, int(out[f"{ax}_rows"][0]) if ax != "kf" else i)
                out[f"{g}/{n}"] = rows[0] if ax == "kf" else rows
        return out

    def _check_values(self, g: str, n: str, x: np.ndarray, row0: int) -> None:
        """Values the schema promises (boxes in [0,1] with x1<=x2, y1<=y2; labels 0/1); StoreError
        naming the array and the video otherwise (`cache verify` lists them all)."""
        bad = value_problem(n, x)
        if bad is None:
            return
        ax = axis_of(n)
        what, r = bad[0], row0 + bad[1]
        kf = r if ax == "kf" else int(np.searchsorted(self._kf_act if ax == "actor" else self._kf_obj, r, "right") - 1)
        video = self.videos[int(self._kf_video[min(max(kf, 0), self.num_keyframes - 1)])] if self.num_keyframes else "?"
        raise StoreError(f"{self.path}: group {g!r}: {what} (video {video!r}), which the schema does not allow "
                         f"(docs/STORE_SCHEMA.md); `cache verify` lists every problem")


def open_store(path_or_url: str) -> FeatureStore:
    """Open a store (local path, file:// or any fsspec URL zarr supports) for reading."""
    return FeatureStore(path_or_url)
