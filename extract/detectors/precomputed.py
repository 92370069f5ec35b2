"""Detections read from files instead of computed.

People: the proposal files of `extract.ava_io.read_proposals` (PySlowFast CSV, MMAction2 pickle,
COCO JSON), looked up by (video, timestamp).

Objects: the outputs bottom-up-attention users already have.

- TSV (`generate_tsv.py` of the Caffe repo): tab-separated rows `image_id, image_w, image_h,
  num_boxes, boxes, features` (boxes / features: base64 of float32 arrays (N, 4) pixels and (N, D)),
  no header; also the 10-field variant of py-bottom-up-attention / LXMERT `img_id, img_h, img_w,
  objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features` (objects_id int64,
  objects_conf float32). A header row naming these fields is accepted too. `features` may be empty.
- NPZ (bottom-up-attention.pytorch): one `.npz` per image with `bbox` (N, 4) pixels, `x` (N, D)
  features (optional), `num_bbox`, `image_h`, `image_w`, `info` {objects_id, objects_conf, ...};
  a directory of them (searched recursively) or a single file.

Image ids map to keyframes as `<video>_<timestamp>` (split at the LAST underscore, so video ids
may contain underscores) or `<video>/<timestamp>` (a sub-directory per video for npz files); a
file extension is ignored; the timestamp is seconds (`902`, `0902`, `902.5`).
When a file has boxes without features, a `feature_extractor` (the built-in `VGDetector`) pools them
(`features_for_boxes`). Files come from other people: the npz `info` (an object array, i.e. a
pickle) goes through the restricted unpickler (`core.safe_pickle`), proposal pickles too.
"""
from __future__ import annotations

import base64
import os
import warnings

import numpy as np
import torch
from torch import Tensor

from stagecache.core.timekeys import timestamp_key, timestamp_keys
from stagecache.core.errors import UserError
from stagecache.core.safe_pickle import loads_pickle

from .types import Detections, ObjectDetections, empty_detections, empty_object_detections
from ._common import check_post_args, filter_people


class PrecomputedFormatError(UserError, ValueError):
    """A malformed detections file; the message names the file (and line for TSV)."""


TSV_FIELDS = ["image_id", "image_w", "image_h", "num_boxes", "boxes", "features"]
TSV_FIELDS_ATTR = ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf",
                   "num_boxes", "boxes", "features"]


def _key(video: str, ts: float) -> tuple[str, int]:
    return str(video), timestamp_key(ts)


def parse_image_id(image_id: str) -> tuple[str, float]:
    """`<video>_<timestamp>` or `<video>/<timestamp>` (extension ignored) -> (video, seconds)."""
    s = str(image_id).replace("\\", "/")
    base, ext = os.path.splitext(s)
    if ext and not ext[1:].isdigit():  # "902.5" keeps its decimals; "x.jpg" loses the extension
        s = base
    if "/" in s:
        video, ts = s.rsplit("/", 1)
        video = video.rsplit("/", 1)[-1]
    elif "_" in s:
        video, ts = s.rsplit("_", 1)
    else:
        raise ValueError(f"image id {image_id!r} is neither <video>_<timestamp> nor <video>/<timestamp>")
    try:
        return video, float(ts)
    except ValueError:
        raise ValueError(f"image id {image_id!r}: timestamp {ts!r} is not a number") from None


class PrecomputedRecord:
    """One image's boxes (N, 4) normalised, class ids, scores and optional (N, D) features."""

    def __init__(self, box, class_id, score, feature):
        self.box, self.class_id, self.score, self.feature = box, class_id, score, feature


def _b64(field: str, dtype, n: int, where: str, what: str) -> np.ndarray | None:
    if field == "" or n == 0:
        return None if field == "" else np.zeros((0,), dtype)
    try:
        arr = np.frombuffer(base64.b64decode(field), dtype=dtype)
    except (ValueError, TypeError) as e:
        raise PrecomputedFormatError(f"{where}: field {what} is not base64 {np.dtype(dtype).name} ({e})") from None
    if arr.size % n:
        raise PrecomputedFormatError(f"{where}: field {what} has {arr.size} values, not a multiple of num_boxes={n}")
    return arr.reshape(n, -1)


class BuaTsv:
    """Lazy reader of a bottom-up-attention TSV: indexes line offsets by keyframe, parses on demand."""

    def __init__(self, path: str):
        self.path = path
        self.index: dict[tuple[str, int], tuple[int, int]] = {}  # key -> (byte offset, line number)
        self.fields: list[str] | None = None
        with open(path, "rb") as f:
            line_no, off = 0, 0
            while True:
                line = f.readline()
                if not line:
                    break
                line_no += 1
                head = line.split(b"\t", 1)[0].decode("utf-8", "replace").strip()
                if line_no == 1 and head in ("image_id", "img_id"):
                    self.fields = line.decode().rstrip("\r\n").split("\t")
                elif line.strip():
                    try:
                        video, ts = parse_image_id(head)
                    except ValueError as e:
                        raise PrecomputedFormatError(f"{path}:{line_no}: {e}") from None
                    self.index[_key(video, ts)] = (off, line_no)
                off += len(line)

    def get(self, key) -> PrecomputedRecord | None:
        loc = self.index.get(key)
        if loc is None:
            return None
        with open(self.path, "rb") as f:
            f.seek(loc[0])
            row = f.readline().decode("utf-8").rstrip("\r\n").split("\t")
        where = f"{self.path}:{loc[1]}"
        fields = self.fields or {6: TSV_FIELDS, 10: TSV_FIELDS_ATTR}.get(len(row))
        if fields is None or len(fields) != len(row):
            raise PrecomputedFormatError(f"{where}: {len(row)} tab-separated fields; expected {len(TSV_FIELDS)} "
                             f"({','.join(TSV_FIELDS)}) or {len(TSV_FIELDS_ATTR)} ({','.join(TSV_FIELDS_ATTR)})")
        r = dict(zip(fields, row))
        try:
            w = float(r.get("image_w", r.get("img_w")))
            h = float(r.get("image_h", r.get("img_h")))
            n = int(r["num_boxes"])
        except (TypeError, ValueError, KeyError) as e:
            raise PrecomputedFormatError(f"{where}: bad image_w/image_h/num_boxes ({e})") from None
        box = _b64(r["boxes"], np.float32, n, where, "boxes")
        if box is None or box.shape[1] != 4:
            raise PrecomputedFormatError(f"{where}: boxes must be num_boxes x 4 float32")
        feat = _b64(r.get("features", ""), np.float32, n, where, "features")
        cls = _b64(r.get("objects_id", ""), np.int64, n, where, "objects_id")
        conf = _b64(r.get("objects_conf", ""), np.float32, n, where, "objects_conf")
        return _record(box, w, h, cls, conf, feat)


def _record(box, w, h, cls, conf, feat) -> PrecomputedRecord:
    n = box.shape[0]
    box = np.clip(box.astype(np.float32) / np.array([w, h, w, h], np.float32), 0.0, 1.0)
    cls = np.full(n, -1, np.int64) if cls is None else np.asarray(cls, np.int64).reshape(n)
    conf = np.ones(n, np.float32) if conf is None else np.asarray(conf, np.float32).reshape(n)
    feat = None if feat is None else np.asarray(feat, np.float32).reshape(n, -1)
    return PrecomputedRecord(box, cls, conf, feat)


def _npz_info(z, fp: str, trust_pickle: bool) -> dict:
    """The `info` dict of a bottom-up-attention npz. numpy stores an object array as a pickle after
    the .npy header; it is unpickled with the restricted unpickler (numpy arrays and containers)."""
    with z.zip.open("info.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(f)
        if not dtype.hasobject:
            return {}
        arr = loads_pickle(f.read(), source=f"{fp}: info", trust=trust_pickle, encoding="latin1")
    info = arr.item() if isinstance(arr, np.ndarray) and arr.size == 1 else arr
    return info if isinstance(info, dict) else {}


class BuaNpz:
    """bottom-up-attention.pytorch npz files (a directory of them, or one file)."""

    def __init__(self, path: str, trust_pickle: bool = False):
        self.path = path
        self.trust_pickle = trust_pickle
        self.index: dict[tuple[str, int], str] = {}
        if os.path.isdir(path):
            files = []
            for root, _, names in os.walk(path):
                files += [os.path.join(root, n) for n in names if n.endswith(".npz")]
        else:
            files = [path]
        for fp in sorted(files):
            rel = os.path.relpath(fp, path) if os.path.isdir(path) else os.path.basename(fp)
            try:
                video, ts = parse_image_id(rel[: -len(".npz")])
            except ValueError as e:
                raise PrecomputedFormatError(f"{fp}: {e}") from None
            self.index[_key(video, ts)] = fp

    def get(self, key) -> PrecomputedRecord | None:
        fp = self.index.get(key)
        if fp is None:
            return None
        try:
            z = np.load(fp, allow_pickle=False)
            box = np.asarray(z["bbox"], np.float32).reshape(-1, 4)
            w, h = float(z["image_w"]), float(z["image_h"])
        except (KeyError, ValueError, TypeError, OSError) as e:
            raise PrecomputedFormatError(f"{fp}: not a bottom-up-attention npz (needs bbox, image_w, image_h): {e}") from None
        n = box.shape[0]
        feat = None
        if "x" in z.files:
            try:  # an object array (a pickle) here is refused by allow_pickle=False: never unpickled
                feat = np.asarray(z["x"], np.float32)
            except (ValueError, TypeError, OSError) as e:
                raise PrecomputedFormatError(f"{fp}: array x is not numeric features ({e})") from None
            if feat.ndim != 2 or n not in feat.shape:
                raise PrecomputedFormatError(f"{fp}: x has shape {feat.shape}, expected ({n}, D)")
            if feat.shape[0] != n:
                feat = feat.T  # some writers store (D, N)
        cls = conf = None
        if "info" in z.files:
            info = _npz_info(z, fp, self.trust_pickle)
            cls, conf = info.get("objects_id"), info.get("objects_conf")
        try:
            return _record(box, w, h, cls, conf, feat)
        except (ValueError, TypeError) as e:  # info's objects_id / objects_conf not one number per box
            raise PrecomputedFormatError(f"{fp}: info objects_id / objects_conf do not give one number per box "
                                         f"({n} boxes): {e}") from None


def open_precomputed_objects(path: str, trust_pickle: bool = False):
    if os.path.isdir(path) or path.endswith(".npz"):
        return BuaNpz(path, trust_pickle)
    if path.endswith((".tsv", ".csv", ".txt")) or os.path.isfile(path):
        return BuaTsv(path)
    raise FileNotFoundError(f"precomputed objects not found: {path}")


class PrecomputedObjectDetector:
    """Objects (and features, where present) from bottom-up-attention TSV / npz files."""

    def __init__(self, *, path: str, feature_extractor=None, max_objects: int | None = None,
                 score_thresh: float = 0.0, class_names: list[str] | None = None,
                 vg_classes: str | None = None, num_classes: int = 1600, device: str = "cpu",
                 trust_pickle: bool = False):
        from .vg import read_class_names

        self.source = open_precomputed_objects(path, trust_pickle)
        self.path = path
        if not self.source.index:
            raise PrecomputedFormatError(f"{path}: no images found")
        self.feature_extractor = feature_extractor
        self.needs_frames = feature_extractor is not None  # pools boxes that come without features
        self.max_objects, self.score_thresh = max_objects, score_thresh
        self.class_names = class_names or read_class_names(vg_classes, num_classes)
        self.device = torch.device(device)
        self.missing: list[tuple[str, int]] = []
        first = self.source.get(next(iter(self.source.index)))
        if first.feature is not None:
            self.feature_dim = first.feature.shape[1]
        elif feature_extractor is not None:
            self.feature_dim = int(feature_extractor.feature_dim)
        else:
            self.feature_dim = 0
            warnings.warn(f"{path} holds boxes without features and no feature_extractor was given: "
                          "objects will have no features (feature_dim 0)", UserWarning, stacklevel=2)

    def __call__(self, frames: Tensor | None, keys=None) -> list[ObjectDetections]:
        if keys is None:
            raise ValueError("the precomputed object detector needs keys=[(video, timestamp), ...]")
        out = []
        for i, (video, ts) in enumerate(keys):
            rec = self.source.get(_key(video, ts))
            if rec is None:
                self.missing.append(_key(video, ts))
                out.append(empty_object_detections(self.feature_dim, self.device))
                continue
            keep = np.flatnonzero(rec.score >= self.score_thresh)
            keep = keep[np.argsort(-rec.score[keep], kind="stable")][: self.max_objects]
            box = torch.from_numpy(rec.box[keep]).to(self.device)
            if rec.feature is not None:
                feat = torch.from_numpy(rec.feature[keep]).to(self.device)
            elif self.feature_extractor is not None:
                if frames is None:
                    raise PrecomputedFormatError(f"{self.path}: {video} {ts}: boxes without features need the frame")
                feat = self.feature_extractor.features_for_boxes(frames[i], box).to(self.device)
            else:
                feat = torch.zeros(len(keep), 0, device=self.device)
            if feat.shape[1] != self.feature_dim:
                raise PrecomputedFormatError(f"{self.path}: {video} {ts}: feature dim {feat.shape[1]}, expected {self.feature_dim}")
            out.append(ObjectDetections(box, torch.from_numpy(rec.score[keep]).to(self.device),
                                        torch.from_numpy(rec.class_id[keep]).to(self.device), feat.float()))
        return out


class PrecomputedPersonDetector:
    """People from an ava_io proposals file, looked up by (video, timestamp)."""

    needs_frames = False

    def __init__(self, *, path: str, score_thresh: float = 0.0, nms_thresh: float = 1.0,
                 max_per_frame: int = 1000, device: str = "cpu", trust_pickle: bool = False):
        from stagecache.extract.ava_io import read_proposals

        check_post_args("precomputed person detector", score_thresh, nms_thresh, max_per_frame)
        props = read_proposals(path, trust_pickle=trust_pickle)
        self.path = path
        self.score_thresh, self.nms_thresh, self.max_per_frame = score_thresh, nms_thresh, max_per_frame
        self.device = torch.device(device)
        self.missing: list[tuple[str, int]] = []
        self.rows: dict[tuple[str, int], np.ndarray] = {}
        keys = timestamp_keys(props.timestamp)
        order = np.lexsort((keys, props.video))
        groups: dict[tuple[str, int], list[int]] = {}
        for i in order.tolist():
            groups.setdefault((str(props.video[i]), int(keys[i])), []).append(i)
        self.rows = {k: np.asarray(v) for k, v in groups.items()}
        self.box = torch.from_numpy(np.asarray(props.box, np.float32))
        self.score = torch.from_numpy(np.asarray(props.score, np.float32))

    def __call__(self, frames: Tensor | None, keys=None) -> list[Detections]:
        if keys is None:
            raise ValueError("the precomputed person detector needs keys=[(video, timestamp), ...]")
        out = []
        for video, ts in keys:
            rows = self.rows.get(_key(video, ts))
            if rows is None:
                self.missing.append(_key(video, ts))
                out.append(empty_detections(self.device))
                continue
            idx = torch.from_numpy(rows)
            d = filter_people(self.box[idx], self.score[idx], torch.ones(len(rows), dtype=torch.long),
                              person_label=1, width=1.0, height=1.0, score_thresh=self.score_thresh,
                              nms_thresh=self.nms_thresh, max_per_frame=self.max_per_frame)
            out.append(d.to(self.device))
        return out
