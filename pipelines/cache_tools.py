"""`cache info / verify / export / import`: inspecting and converting feature stores.

HDF5 layouts (docs/STORE_SCHEMA.md, "HDF5 import/export"):
- "stagecache": one .h5 mirroring `Tables` (lossless round trip of every group and attribute).
- "stage": STAGE's released features, one .h5 per split; key `<video>_<timestamp>` -> group with
  `boxes` (N,4), `features` (N,C), `labels` (N,L) for the N actors of that keyframe.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np

from extract.ava_io import format_timestamp, read_label_map, timestamp_key
from extract.store import BASE_ARRAYS, StoreError, StoreWriter, format_bytes, open_store
from extract.store_io import FRAGMENTS, axis_of

LAYOUTS = ("stagecache", "stage")
_STORE_KEYS = ("schema_version", "project_version")  # added by the store to group attrs


# ----------------------------------------------------------------------------- info
def store_info(path: str) -> dict:
    """Counts, dims and bytes on disk per array of every group."""
    st = open_store(path)
    sizes: dict[tuple[str, str], int] = defaultdict(int)
    total = 0
    nfiles = 0
    for rel, size in st.loc.files():
        total += size
        nfiles += 1
        parts = rel.split("/")
        if parts[0] == FRAGMENTS and len(parts) >= 4:
            sizes[(parts[1], parts[2])] += size
    groups = {}
    for g in sorted(st.groups):
        arrays = {}
        if g in st.fragments:
            for n, (shape, dt) in st.array_info(g).items():
                arrays[n] = {"shape": list(shape), "dtype": dt,
                             "bytes": sum(sizes[(f.id, n)] for f in st.fragments[g])}
        groups[g] = {"attrs": st.groups[g], "videos": len(st._src.get(g, {})), "missing": len(st.missing(g)),
                     "fragments": len(st.fragments.get(g, [])), "arrays": arrays}
    return {"path": st.path, "attrs": st.attrs, "videos": len(st.videos), "keyframes": st.num_keyframes,
            "actors": st.num_actors, "objects": st.num_objects, "files": nfiles, "bytes": total, "groups": groups}


def format_info(info: dict) -> str:
    a = info["attrs"]
    lines = [f"store {info['path']}  split={a['split']}  schema v{a['schema_version']}  created by {a['created_by']}",
             f"  {info['videos']} videos, {info['keyframes']} keyframes, {info['actors']} actors, "
             f"{info['objects']} objects; {len(a['label_ids'])} labels; "
             f"{len(a.get('object_classes') or [])} object classes",
             f"  {info['files']} files, {format_bytes(info['bytes'])} on disk"]
    for g, gi in info["groups"].items():
        extra = f", {gi['missing']} MISSING" if gi["missing"] else ""
        attrs = {k: v for k, v in gi["attrs"].items() if k not in _STORE_KEYS}
        lines.append(f"  group {g}: {gi['videos']} videos in {gi['fragments']} fragment(s){extra}  attrs={json.dumps(attrs)}")
        for n, ai in gi["arrays"].items():
            lines.append(f"    {n:<18} {ai['dtype']:<8} {str(tuple(ai['shape'])):<22} {format_bytes(ai['bytes'])}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- verify
def verify_store(path: str, *, label_map: str | None = None) -> list[str]:
    """Every problem found (empty list: the store is sound)."""
    try:
        st = open_store(path)
    except StoreError as e:
        return [str(e)]
    problems: list[str] = []
    a = st.attrs
    if len(a["label_ids"]) != len(a["label_names"]):
        problems.append(f"root: {len(a['label_ids'])} label_ids but {len(a['label_names'])} label_names")
    if label_map is not None:
        lm = read_label_map(label_map)
        if list(lm.ids) != list(a["label_ids"]):
            problems.append(f"label ids {a['label_ids'][:5]}... ({len(a['label_ids'])}) differ from {label_map} "
                            f"({lm.ids[:5]}..., {len(lm.ids)})")
    if "base" not in st.fragments:
        problems.append("no base group (boxes, labels): nothing to train on")
    for g in sorted(st.groups):
        miss = st.missing(g)
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
            problems += _check_array(st, g, n)
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
    x = st.load({g: [n]}).data[f"{g}/{n}"].numpy()
    ax = axis_of(n)
    out = []
    if x.dtype.kind == "f" and x.size:
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
        if bad.any():
            r = int(np.argmax(bad))
            out.append(f"{g}/{n}: {int(bad.sum())} row(s) with NaN/Inf (first in video {_row_video(st, ax, r)}, row {r})")
    if n.endswith("_box") and len(x):
        xf = x.astype(np.float64)
        bad = ((xf < 0) | (xf > 1)).any(1) | (xf[:, 0] > xf[:, 2]) | (xf[:, 1] > xf[:, 3])
        if bad.any():
            r = int(np.argmax(bad))
            out.append(f"{g}/{n}: {int(bad.sum())} box(es) outside [0,1] or with x1>x2 / y1>y2 "
                       f"(first in video {_row_video(st, ax, r)}: {x[r].tolist()})")
    if n.endswith("_labels"):
        L = len(st.attrs["label_ids"])
        if x.ndim != 2 or x.shape[1] != L:
            out.append(f"{g}/{n}: {x.shape[1:]} columns but the label map has {L}")
        elif x.size and x.max() > 1:
            out.append(f"{g}/{n}: values other than 0/1")
    return out


# ----------------------------------------------------------------------------- HDF5 export / import
def export_h5(path: str, out: str, *, layout: str = "stagecache", backbone: str | None = None) -> None:
    """Write the store as one .h5 (layout 'stagecache') or in STAGE's layout (needs `backbone`)."""
    import h5py

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    st = open_store(path)
    if layout == "stage":
        groups = [g for g in st.fragments if g != "base" and "actor_pooled" in st.array_info(g)]
        if backbone is None:
            if len(groups) != 1:
                raise ValueError(f"{path}: pick the backbone to export with --backbone; candidates: {groups}")
            backbone = groups[0]
        t = st.load({"base": ["actor_box", "actor_labels"], backbone: ["actor_pooled"]})
        box, lab = t.data["base/actor_box"].numpy(), t.data["base/actor_labels"].numpy()
        feat = t.data[f"{backbone}/actor_pooled"].numpy().astype(np.float32)
        off = t.kf_actor_offset.numpy()
        with h5py.File(out, "w") as f:
            for k in range(st.num_keyframes):
                key = f"{t.video_names[int(t.kf_video[k])]}_{format_timestamp(float(t.kf_time[k]))}"
                grp = f.create_group(key)
                a, b = off[k], off[k + 1]
                grp.create_dataset("boxes", data=box[a:b])
                grp.create_dataset("features", data=feat[a:b])
                grp.create_dataset("labels", data=lab[a:b])
        return
    t = st.load()
    with h5py.File(out, "w") as f:
        f.attrs["stagecache"] = json.dumps(st.attrs)
        f.create_dataset("video_names", data=np.array(t.video_names, dtype=object), dtype=h5py.string_dtype())
        for name in ("kf_video", "kf_time", "kf_actor_offset", "kf_object_offset"):
            f.create_dataset(name, data=getattr(t, name).numpy())
        for g in st.groups:
            grp = f.create_group(f"groups/{g}")
            grp.attrs["attrs"] = json.dumps({k: v for k, v in st.groups[g].items() if k not in _STORE_KEYS})
        for key, x in t.data.items():
            f.create_dataset(f"groups/{key}", data=x.numpy())


def detect_layout(h5_path: str) -> str:
    import h5py

    with h5py.File(h5_path, "r") as f:
        return "stagecache" if "stagecache" in f.attrs else "stage"


def import_h5(src: str, path: str, *, layout: str = "auto", split: str | None = None,
              label_map: str | None = None, backbone: str = "stage_slowfast", boxes_are_gt: bool = True,
              rank: int = 0) -> str:
    """Build a store at `path` from an .h5 in either layout; returns the layout read."""
    import h5py

    layout = detect_layout(src) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: auto, {', '.join(LAYOUTS)}")
    with h5py.File(src, "r") as f:
        if layout == "stagecache":
            _import_stagecache(f, src, path, rank)
        else:
            _import_stage(f, src, path, split=split or os.path.splitext(os.path.basename(src))[0],
                          label_map=label_map, backbone=backbone, boxes_are_gt=boxes_are_gt, rank=rank)
    return layout


def _import_stagecache(f, src, path, rank):
    a = json.loads(f.attrs["stagecache"])
    videos = [v.decode() if isinstance(v, bytes) else str(v) for v in f["video_names"][()]]
    kv, kt = f["kf_video"][()], f["kf_time"][()]
    ao, oo = f["kf_actor_offset"][()], f["kf_object_offset"][()]
    vk = np.searchsorted(kv, np.arange(len(videos) + 1))  # keyframes of video i: [vk[i], vk[i+1])
    off = {"actor": ao, "object": oo, "kf": np.arange(len(kt) + 1)}
    with StoreWriter(path, split=a["split"], label_ids=a["label_ids"], label_names=a["label_names"],
                     object_classes=a.get("object_classes"), rank=rank) as w:
        for g, grp in f["groups"].items():
            w.declare_group(g, json.loads(grp.attrs["attrs"]))
            data = {n: grp[n][()] for n in grp}
            for i, v in enumerate(videos):
                k0, k1 = vk[i], vk[i + 1]
                arrays = {n: x[off[axis_of(n)][k0]:off[axis_of(n)][k1]] for n, x in data.items()}
                w.add_video(g, v, timestamps=kt[k0:k1], actor_counts=np.diff(ao[k0:k1 + 1]),
                            object_counts=np.diff(oo[k0:k1 + 1]), arrays=arrays)


def _import_stage(f, src, path, *, split, label_map, backbone, boxes_are_gt, rank):
    import h5py

    per_video: dict[str, list] = defaultdict(list)
    for key in f:
        if "_" not in key or not isinstance(f[key], h5py.Group):
            raise ValueError(f"{src}: key {key!r} is not <video>_<timestamp> holding boxes/features/labels")
        video, ts = key.rsplit("_", 1)
        try:
            t = float(ts)
        except ValueError:
            raise ValueError(f"{src}: key {key!r}: timestamp {ts!r} is not a number") from None
        grp = f[key]
        missing = [d for d in ("boxes", "features", "labels") if d not in grp]
        if missing:
            raise ValueError(f"{src}: key {key!r} lacks {missing}")
        per_video[video].append((timestamp_key(t), t, key))
    first = f[next(iter(f))] if len(f) else None
    L = first["labels"].shape[1] if first is not None else 0
    if label_map is not None:
        lm = read_label_map(label_map)
        ids, names = list(lm.ids), list(lm.names)
        if len(ids) != L:
            raise ValueError(f"{src}: labels have {L} columns but {label_map} has {len(ids)} classes")
    else:
        ids, names = list(range(1, L + 1)), [f"class_{i}" for i in range(1, L + 1)]
    with StoreWriter(path, split=split, label_ids=ids, label_names=names, rank=rank) as w:
        w.declare_group("base", {"source": "stage_h5", "file": os.path.abspath(src), "boxes_are_gt": boxes_are_gt})
        w.declare_group(backbone, {"source": "stage_h5", "file": os.path.abspath(src)})
        for video in sorted(per_video):
            entries = sorted(per_video[video])
            box, feat, lab, ac = [], [], [], []
            for _, _, key in entries:
                g = f[key]
                b = np.asarray(g["boxes"][()], dtype=np.float32).reshape(-1, 4)
                if b.size and (b.min() < 0 or b.max() > 1):
                    raise ValueError(f"{src}: key {key!r}: boxes are not normalised to [0, 1]")
                x, y = np.asarray(g["features"][()]), np.asarray(g["labels"][()])
                if len(x) != len(b) or len(y) != len(b) or (y.ndim == 2 and y.shape[1] != L):
                    raise ValueError(f"{src}: key {key!r}: boxes {b.shape}, features {x.shape}, labels {y.shape} disagree")
                box.append(b), feat.append(x.reshape(len(b), -1)), lab.append(y.reshape(len(b), L)), ac.append(len(b))
            A = int(sum(ac))
            ts = [t for _, t, _ in entries]
            zeros = [0] * len(ts)
            w.add_video("base", video, timestamps=ts, actor_counts=ac, object_counts=zeros, arrays=dict(
                actor_box=np.concatenate(box), actor_score=np.ones(A, np.float32),
                actor_is_gt=np.full(A, boxes_are_gt), actor_labels=(np.concatenate(lab) > 0.5).astype(np.uint8),
                actor_track=np.full(A, -1, np.int64), object_box=np.zeros((0, 4), np.float32),
                object_class=np.zeros(0, np.int64), object_score=np.zeros(0, np.float32)))
            w.add_video(backbone, video, timestamps=ts, actor_counts=ac, object_counts=zeros,
                        arrays={"actor_pooled": np.concatenate(feat)})


