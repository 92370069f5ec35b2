"""Import of the features released with STAGE (aimagelab/STAGE_action_detection) into a store.

The layouts, exactly as the official `data/ava_dataset.py` and README read them:

- `stage-i3d` actors: `ACTORS_DIR/<video>/<timestamp>.h5` (timestamp zero padded, e.g. `0902.h5`),
  datasets `features` (N, C, t, h, w) (the official model averages them over t, h, w), `boxes`
  (N, 4) normalised x1y1x2y2, `labels` (N, 81) 0/1.
- `stage-slowfast` actors: one .h5 per split, key `<video>_<timestamp>` (split at the LAST `_`:
  AVA video ids contain `_` and start with `-`) -> group with `boxes` (N, 4), `features` (N, C),
  `labels` (N, 81).
- objects (`objects_features.h5`): flat datasets `<video>_<timestamp without leading zeros>_features`
  (O, D), `_boxes` (O, 4), `_cls_prob` (O, classes) per keyframe; `cls_prob` column 0 is the
  detector's background.

Label columns ("background-first", the releases' convention and our default): column 0 is
background, column c is AVA action id c. "label-map": column j is the j-th id of the label map
(or ids 1..L without one), for files written that way.

Import streams keyframe by keyframe (the release is ~90 GB) and commits each video through
`StoreWriter` (base, then the backbone group), so a killed import rerun skips committed videos and
ends with the same store. Export (the reverse) lives in `extract/formats/stage_export.py`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from stagecache.extract.ava_io import read_label_map, timestamp_key
from stagecache.core.errors import UserError
from stagecache.extract.store import StoreWriter, open_store

LAYOUTS = ("stage-i3d", "stage-slowfast")
LABEL_COLUMNS = ("background-first", "label-map")
OBJECT_KINDS = ("features", "boxes", "cls_prob")


class StageReleaseError(UserError, ValueError):
    """A file in a STAGE release layout is malformed (message names the file and key)."""


@dataclass
class Keyframe:
    """One keyframe of a release: where to read it, and the reader."""

    time: float
    name: str  # file path (I3D) or key (SlowFast): what error messages name
    read: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]  # -> boxes, pooled features, labels


@dataclass
class ImportSummary:
    store: str
    videos: int
    keyframes: int
    actors: int
    objects: int
    bytes: int
    skipped_videos: int

    def line(self) -> str:
        from stagecache.extract.store import format_bytes

        skipped = f" ({self.skipped_videos} already committed, skipped)" if self.skipped_videos else ""
        return (f"{self.store}: {self.videos} videos{skipped}, {self.keyframes} keyframes, {self.actors} actors, "
                f"{self.objects} objects, {format_bytes(self.bytes)}")


def _boxes(x, where: str) -> np.ndarray:
    b = np.asarray(x, dtype=np.float32)
    if b.ndim != 2 or b.shape[1] != 4:
        raise StageReleaseError(f"{where}: boxes have shape {b.shape}, expected (N, 4)")
    if b.size and (not np.isfinite(b).all() or b.min() < 0 or b.max() > 1):
        raise StageReleaseError(f"{where}: boxes are not normalised x1,y1,x2,y2 in [0, 1]")
    return b


def _dataset(f, key: str, where: str):
    import h5py

    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise StageReleaseError(f"{where} lacks dataset {key!r}")
    return f[key][()]


def _read_actor_datasets(f, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (N,4) f32, features pooled to (N,C) f32, labels (N,L)) of one keyframe group/file."""
    b = _boxes(_dataset(f, "boxes", where), where)
    x = np.asarray(_dataset(f, "features", where))
    y = np.asarray(_dataset(f, "labels", where))
    if x.ndim < 2 or x.shape[0] != len(b) or y.ndim != 2 or y.shape[0] != len(b):
        raise StageReleaseError(f"{where}: boxes {b.shape}, features {x.shape}, labels {y.shape} disagree")
    if x.ndim > 2:
        # The official model averages I3D features over t, h, w (models/model.py); in float64 so
        # the order of the means does not matter.
        x = x.astype(np.float64).mean(axis=tuple(range(2, x.ndim)))
    x = x.astype(np.float32)
    if x.size and not np.isfinite(x).all():  # a store must never hold them (verify would flag them later)
        r = int(np.argmax(~np.isfinite(x).all(1)))
        raise StageReleaseError(f"{where}: features hold NaN/Inf (first: actor row {r}); nothing of this video was "
                                f"written (videos before it are committed: rerun after fixing the file resumes)")
    if y.size and not np.isfinite(y).all():
        raise StageReleaseError(f"{where}: labels hold NaN/Inf; nothing of this video was written")
    return b, x, y


def _parse_time(text: str, where: str) -> float:
    try:
        return float(text) if text else 0.0  # "0000".lstrip("0") == "" in the objects' keys
    except ValueError:
        raise StageReleaseError(f"{where}: timestamp {text!r} is not a number") from None


def scan_i3d(actors_dir: str) -> dict[str, list[Keyframe]]:
    """Videos -> keyframes (sorted by time) of an I3D actors directory; reads no feature data."""
    import h5py

    if not os.path.isdir(actors_dir):
        raise StageReleaseError(f"{actors_dir}: not a directory (layout stage-i3d expects <video>/<timestamp>.h5)")
    out: dict[str, list[Keyframe]] = {}
    for video in sorted(os.listdir(actors_dir)):
        vdir = os.path.join(actors_dir, video)
        if video.startswith("."):
            continue
        if not os.path.isdir(vdir):
            raise StageReleaseError(f"{vdir}: expected a directory per video holding <timestamp>.h5 files")
        kfs = []
        for name in os.listdir(vdir):
            path = os.path.join(vdir, name)
            if name.startswith("."):
                continue
            if not name.endswith(".h5"):
                raise StageReleaseError(f"{path}: not a <timestamp>.h5 file")

            def read(path=path):
                try:
                    with h5py.File(path, "r") as f:
                        return _read_actor_datasets(f, path)
                except OSError as e:
                    raise StageReleaseError(f"{path}: not a readable HDF5 file ({e})") from None

            kfs.append(Keyframe(_parse_time(name[:-3], path), path, read))
        if kfs:  # a video without keyframes has nothing to store
            out[video] = _sorted_unique(kfs, vdir)
    return out


def scan_slowfast(f, src: str) -> dict[str, list[Keyframe]]:
    """Videos -> keyframes of an open SlowFast release file; reads no feature data."""
    import h5py

    per: dict[str, list[Keyframe]] = {}
    for key in f:
        where = f"{src}: key {key!r}"
        if "_" not in key or not isinstance(f[key], h5py.Group):
            raise StageReleaseError(f"{where} is not a <video>_<timestamp> group holding boxes/features/labels")
        video, ts = key.rsplit("_", 1)
        per.setdefault(video, []).append(
            Keyframe(_parse_time(ts, where), where, lambda key=key, where=where: _read_actor_datasets(f[key], where)))
    return {v: _sorted_unique(per[v], f"{src}: video {v!r}") for v in sorted(per)}


def _sorted_unique(kfs: list[Keyframe], where: str) -> list[Keyframe]:
    kfs.sort(key=lambda k: k.time)
    keys = [timestamp_key(k.time) for k in kfs]
    dup = [kfs[i].name for i in range(1, len(kfs)) if keys[i] == keys[i - 1]]
    if dup:
        raise StageReleaseError(f"{where}: two keyframes with the timestamp of {dup[0]}")
    return kfs


class ObjectsFile:
    """`objects_features.h5` indexed by (video, timestamp key) without reading its data."""

    def __init__(self, path: str):
        import h5py

        self.path = path
        try:
            self.f = h5py.File(path, "r")
        except OSError as e:
            raise StageReleaseError(f"{path}: not a readable HDF5 file ({e})") from None
        try:
            self._index()
        except BaseException:
            self.f.close()  # a file that fails validation is not left open
            raise

    def _index(self) -> None:
        path = self.path
        self.index: dict[tuple[str, int], str] = {}
        for key in self.f:
            kind = next((k for k in OBJECT_KINDS if key.endswith("_" + k)), None)
            prefix = key[: -len(kind) - 1] if kind else ""
            if kind is None or "_" not in prefix:
                raise StageReleaseError(f"{path}: key {key!r} is not <video>_<timestamp>_features|boxes|cls_prob")
            video, ts = prefix.rsplit("_", 1)
            self.index[(video, timestamp_key(_parse_time(ts, f"{path}: key {key!r}")))] = prefix
        self.num_classes = None
        if self.index:
            first = next(iter(self.index.values()))
            self.num_classes = int(np.shape(self._get(first, "cls_prob"))[-1])

    def _get(self, prefix: str, kind: str):
        return _dataset(self.f, f"{prefix}_{kind}", self.path)

    def read(self, video: str, time: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(box (O,4), class (O,) without the background column, score (O,), feature (O,D))."""
        prefix = self.index.get((video, timestamp_key(time)))
        if prefix is None:
            key = f"{video}_{('%04d' % time if float(time).is_integer() else repr(time)).lstrip('0')}_features"
            raise StageReleaseError(f"{self.path}: missing key {key!r} (objects of video {video} at {time:g})")
        where = f"{self.path}: key {prefix!r}"
        feat = np.asarray(self._get(prefix, "features"), dtype=np.float32)
        box = _boxes(self._get(prefix, "boxes"), where + "_boxes")
        prob = np.asarray(self._get(prefix, "cls_prob"), dtype=np.float32)
        if feat.ndim != 2 or prob.ndim != 2 or not len(feat) == len(box) == len(prob):
            raise StageReleaseError(f"{where}: features {feat.shape}, boxes {box.shape}, cls_prob {prob.shape} disagree")
        if prob.shape[1] != self.num_classes or prob.shape[1] < 2:
            raise StageReleaseError(f"{where}_cls_prob: {prob.shape[1]} columns, expected {self.num_classes} "
                                    "(background + classes) like the rest of the file")
        cls = prob[:, 1:].argmax(1) if len(prob) else np.zeros(0, np.int64)  # background column dropped
        return box, cls.astype(np.int64), prob[np.arange(len(prob)), cls + 1], feat

    def close(self) -> None:
        self.f.close()


def object_vocabulary(path: str | None, num_classes: int | None) -> list[str] | None:
    """Object class names: the user's file (one name a line, in cls_prob column order, without
    background; a first line `__background__` is dropped), else `object_<column>`."""
    if num_classes is None:
        return None
    if path is None:
        return [f"object_{c}" for c in range(1, num_classes)]
    with open(path) as fh:
        names = [ln.strip() for ln in fh if ln.strip()]
    if names and names[0] == "__background__":
        names = names[1:]
    if len(names) != num_classes - 1:
        raise StageReleaseError(f"{path}: {len(names)} class names, but cls_prob has {num_classes} columns "
                                f"(background + {num_classes - 1} classes)")
    return names


def label_columns_for(num_columns: int, label_map: str | None, convention: str, where: str
                      ) -> tuple[list[int], list[str], np.ndarray]:
    """Store label ids, names, and the release's column of each."""
    if convention not in LABEL_COLUMNS:
        raise StageReleaseError(f"unknown label columns {convention!r}; valid: {', '.join(LABEL_COLUMNS)}")
    if label_map is not None:
        lm = read_label_map(label_map)
        ids, names = list(lm.ids), list(lm.names)
    else:
        first = 1 if convention == "background-first" else 0
        ids = list(range(1, num_columns + 1 - first))
        names = [f"class_{i}" for i in ids]
    if convention == "label-map":
        if len(ids) != num_columns:
            raise StageReleaseError(f"{where}: labels have {num_columns} columns but {label_map} has {len(ids)} classes")
        return ids, names, np.arange(num_columns)
    too_big = [i for i in ids if not 1 <= i < num_columns]
    if too_big:
        raise StageReleaseError(f"{where}: labels have {num_columns} columns (0 = background, c = id c), "
                                f"so label ids {too_big[:5]} of {label_map} have no column")
    return ids, names, np.asarray(ids)


def _first_label_width(videos: dict[str, list[Keyframe]]) -> int:
    for kfs in videos.values():
        for k in kfs:
            return int(k.read()[2].shape[1])
    return 1


def import_release(videos: dict[str, list[Keyframe]], store: str, *, layout: str, source: str, split: str,
                   objects: str | None = None, label_map: str | None = None,
                   label_columns: str = "background-first", backbone: str, object_names: str | None = None,
                   boxes_are_gt: bool = True, rank: int = 0, progress: bool = True) -> ImportSummary:
    """Write `videos` (from `scan_i3d` / `scan_slowfast`) into `store`, one commit per video."""
    from tqdm import tqdm

    L = _first_label_width(videos)
    ids, names, cols = label_columns_for(L, label_map, label_columns, source)
    objs = ObjectsFile(objects) if objects else None
    w = None
    try:
        vocab = object_vocabulary(object_names, objs.num_classes) if objs else None
        w = StoreWriter(store, split=split, label_ids=ids, label_names=names, object_classes=vocab,
                        rank=rank, flush_bytes=1 << 62, flush_seconds=float("inf"))  # we flush per video
        attrs = {"source": layout, "path": os.path.abspath(source), "label_columns": label_columns,
                 "boxes_are_gt": boxes_are_gt, "objects": os.path.abspath(objects) if objects else None}
        w.declare_group("base", attrs)
        w.declare_group(backbone, attrs)
        todo = {g: set(videos) - w.done(g) for g in ("base", backbone)}
        skipped = 0
        bar = tqdm(total=sum(len(k) for k in videos.values()), desc=f"import {layout}", unit="kf",
                   disable=not progress)
        for video, kfs in videos.items():
            if video not in todo["base"] and video not in todo[backbone]:
                skipped += 1
                bar.update(len(kfs))
                continue
            base, feat, ac, oc = _read_video(video, kfs, L, cols, objs, boxes_are_gt, bar)
            ts = [k.time for k in kfs]
            for g, arrays in (("base", base), (backbone, {"actor_pooled": feat})):
                if video in todo[g]:
                    w.add_video(g, video, timestamps=ts, actor_counts=ac, object_counts=oc, arrays=arrays)
            w.flush()  # commit the video: a killed import resumes after it
        bar.close()
        w.close()
    finally:
        if w is not None:
            w.close_quietly()  # a failed import releases the rank's lock; closing twice is a no-op
        if objs is not None:
            objs.close()
    st = open_store(store)
    return ImportSummary(store, len(st.videos), st.num_keyframes, st.num_actors, st.num_objects,
                         sum(s for _, s in st.loc.files()), skipped)


def _read_video(video, kfs, L, cols, objs, boxes_are_gt, bar) -> tuple[dict, np.ndarray, list[int], list[int]]:
    """One video's base arrays, pooled features (A, C), actor and object counts per keyframe."""
    boxes, feats, labels, oboxes, ocls, oscore, ofeat = [], [], [], [], [], [], []
    for k in kfs:
        b, x, y = k.read()
        if y.shape[1] != L:
            raise StageReleaseError(f"{k.name}: labels have {y.shape[1]} columns, earlier keyframes {L}")
        if feats and x.shape[1] != feats[0].shape[1]:
            raise StageReleaseError(f"{k.name}: features are {x.shape[1]}-d, earlier keyframes {feats[0].shape[1]}-d")
        boxes.append(b), feats.append(x), labels.append((y[:, cols] > 0.5).astype(np.uint8))
        if objs is not None:
            ob, oc, os_, of = objs.read(video, k.time)
            if ofeat and of.shape[1] != ofeat[0].shape[1]:
                raise StageReleaseError(f"{objs.path}: objects of {video} at {k.time:g} are {of.shape[1]}-d, "
                                        f"earlier ones {ofeat[0].shape[1]}-d")
            oboxes.append(ob), ocls.append(oc), oscore.append(os_), ofeat.append(of)
        else:
            oboxes.append(np.zeros((0, 4), np.float32))
        bar.update(1)
    A = sum(len(b) for b in boxes)
    base = dict(
        actor_box=np.concatenate(boxes), actor_score=np.ones(A, np.float32),
        actor_is_gt=np.full(A, boxes_are_gt), actor_labels=np.concatenate(labels),
        actor_track=np.full(A, -1, np.int64), object_box=np.concatenate(oboxes),
        object_class=np.concatenate(ocls) if objs else np.zeros(0, np.int64),
        object_score=np.concatenate(oscore) if objs else np.zeros(0, np.float32))
    if objs is not None:
        base["object_feature"] = np.concatenate(ofeat)
    return base, np.concatenate(feats), [len(b) for b in boxes], [len(b) for b in oboxes]


def import_stage_i3d(actors_dir: str, store: str, *, split: str | None = None, backbone: str = "stage_i3d",
                     **kw) -> ImportSummary:
    """`cache import --layout stage-i3d ACTORS_DIR STORE [--objects OBJECTS_H5]`."""
    split = split or os.path.basename(os.path.normpath(actors_dir))
    return import_release(scan_i3d(actors_dir), store, layout="stage-i3d", source=actors_dir, split=split,
                          backbone=backbone, **kw)


def import_stage_slowfast(features_h5: str, store: str, *, split: str | None = None,
                          backbone: str = "stage_slowfast", **kw) -> ImportSummary:
    """`cache import --layout stage-slowfast FEATURES_H5 STORE [--objects OBJECTS_H5]`."""
    import h5py

    split = split or os.path.splitext(os.path.basename(features_h5))[0]
    try:
        f = h5py.File(features_h5, "r")
    except OSError as e:
        raise StageReleaseError(f"{features_h5}: not a readable HDF5 file ({e})") from None
    with f:
        return import_release(scan_slowfast(f, features_h5), store, layout="stage-slowfast", source=features_h5,
                              split=split, backbone=backbone, **kw)
