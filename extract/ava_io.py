"""Every AVA file format, read and written in one place.

Formats (all CSVs have no header, like the AVA release; a header line whose first field is
`video`, `video_id` or `original_vido_id` is tolerated):

- annotations  `video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]` (ava_train_v2.2.csv)
- proposals    `video,timestamp,x1,y1,x2,y2,action_or_-1,score` (PySlowFast
               ava_detection_*_boxes_and_labels.csv; a box is repeated per action, deduplicated here),
               MMAction2 pickle `{"<video>,<%04d ts>": ndarray (N, 5) x1,y1,x2,y2,score}`, COCO JSON
               (see `read_proposals_json`)
- predictions  `video,timestamp,x1,y1,x2,y2,action_id,score`
- objects      `video,timestamp,x1,y1,x2,y2,class_id,score`
- excluded     `video,timestamp`
- label map    pbtxt `item { name: "..." id: N }` or `item { name: "..." label_id: N label_type: ... }`
- frame lists  PySlowFast `original_vido_id video_id frame_id path labels` (space separated, header)

Timestamps are numbers everywhere: `902`, `0902` and `902.000000` are one keyframe
(`timestamp_key`). Writers write `%04d` when the timestamp is integral (as AVA does), else the float.
Boxes are normalised x1, y1, x2, y2 float32; values outside [0, 1] are clipped with one warning per
file. Malformed rows raise `AvaFormatError` naming file and line.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass, fields
from typing import Iterable

import numpy as np

__all__ = [
    "AvaFormatError", "timestamp_key", "timestamp_keys", "same_timestamp", "format_timestamp",
    "LabelMap", "read_label_map", "write_label_map",
    "Annotations", "read_annotations", "write_annotations",
    "Proposals", "read_proposals", "read_proposals_csv", "read_proposals_pickle",
    "read_proposals_json", "write_proposals_csv",
    "Objects", "read_objects", "write_objects",
    "Predictions", "read_predictions", "write_predictions",
    "read_excluded", "write_excluded",
    "FrameList", "read_frame_list", "write_frame_list",
]

_HEADER_FIRST_FIELDS = {"video", "video_id", "original_vido_id", "original_video_id"}


class AvaFormatError(ValueError):
    """A malformed AVA file; the message names the file and (1-based) line."""

    def __init__(self, path, line: int | None, msg: str):
        where = f"{path}" if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {msg}")
        self.path, self.line = str(path), line


# ----------------------------------------------------------------------------- timestamps

def timestamp_key(ts) -> int:
    """Integer milliseconds of a timestamp given as number or string (`902`, `0902`, `902.0`)."""
    return int(round(float(ts) * 1000.0))


def timestamp_keys(ts: np.ndarray) -> np.ndarray:
    """Vectorised `timestamp_key`: (N,) float seconds -> (N,) int64 milliseconds."""
    return np.rint(np.asarray(ts, dtype=np.float64) * 1000.0).astype(np.int64)


def same_timestamp(a, b) -> bool:
    return timestamp_key(a) == timestamp_key(b)


def format_timestamp(ts: float) -> str:
    t = float(ts)
    if t.is_integer():
        return "%04d" % int(t)
    return repr(t)


def _format_timestamps(ts: np.ndarray) -> list[str]:
    # Cache per distinct value: a CSV repeats each keyframe's timestamp many times.
    uniq, inv = np.unique(np.asarray(ts, dtype=np.float64), return_inverse=True)
    strs = [format_timestamp(t) for t in uniq.tolist()]
    return [strs[i] for i in inv.ravel().tolist()]


# ----------------------------------------------------------------------------- column tables

class _Table:
    """Mixin for the column-oriented dataclasses: one row per CSV row, all columns equal length."""

    def __len__(self) -> int:
        return len(self.timestamp)

    def select(self, index):
        """Rows by boolean mask or integer index array (a new object)."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def keys(self) -> np.ndarray:
        """(N,) int64 timestamp keys (milliseconds)."""
        return timestamp_keys(self.timestamp)


def _col(values, dtype) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


@dataclass
class Annotations(_Table):
    video: np.ndarray  # (N,) str
    timestamp: np.ndarray  # (N,) float64 seconds
    box: np.ndarray  # (N, 4) float32 normalised x1, y1, x2, y2
    action: np.ndarray  # (N,) int64 label-map id
    person: np.ndarray  # (N,) int64, -1 when the file has no person_id column

    def __post_init__(self):
        self.video = _col(self.video, str)
        self.timestamp = _col(self.timestamp, np.float64)
        self.box = _col(self.box, np.float32).reshape(-1, 4)
        self.action = _col(self.action, np.int64)
        self.person = _col(self.person, np.int64)


@dataclass
class Proposals(_Table):
    video: np.ndarray  # (N,) str
    timestamp: np.ndarray  # (N,) float64
    box: np.ndarray  # (N, 4) float32
    score: np.ndarray  # (N,) float32

    def __post_init__(self):
        self.video = _col(self.video, str)
        self.timestamp = _col(self.timestamp, np.float64)
        self.box = _col(self.box, np.float32).reshape(-1, 4)
        self.score = _col(self.score, np.float32)


@dataclass
class Objects(_Table):
    video: np.ndarray
    timestamp: np.ndarray
    box: np.ndarray  # (N, 4) float32
    class_id: np.ndarray  # (N,) int64 detector class id
    score: np.ndarray  # (N,) float32

    def __post_init__(self):
        self.video = _col(self.video, str)
        self.timestamp = _col(self.timestamp, np.float64)
        self.box = _col(self.box, np.float32).reshape(-1, 4)
        self.class_id = _col(self.class_id, np.int64)
        self.score = _col(self.score, np.float32)


@dataclass
class Predictions(_Table):
    video: np.ndarray
    timestamp: np.ndarray
    box: np.ndarray  # (N, 4) float32
    action: np.ndarray  # (N,) int64
    score: np.ndarray  # (N,) float32

    def __post_init__(self):
        self.video = _col(self.video, str)
        self.timestamp = _col(self.timestamp, np.float64)
        self.box = _col(self.box, np.float32).reshape(-1, 4)
        self.action = _col(self.action, np.int64)
        self.score = _col(self.score, np.float32)


# ----------------------------------------------------------------------------- CSV core

class _CsvTable:
    """A parsed numeric CSV: column 0 as strings, columns 1.. as float64 (NaN where a row is short)."""

    def __init__(self, path, video: np.ndarray, num: np.ndarray, ncol: np.ndarray, lines: list[int] | None):
        self.path, self.video, self.num, self.ncol, self._lines = path, video, num, ncol, lines

    def __len__(self) -> int:
        return self.video.shape[0]

    def line(self, i: int) -> int:
        if self._lines is None:  # fast path kept no line numbers: recount (error path only)
            self._lines = _read_csv_rows(self.path, range(1, 1000))[1]
        return self._lines[i]

    def col(self, j: int) -> np.ndarray:
        return self.num[:, j - 1]

    def int_col(self, j: int, what: str, rows: np.ndarray | None = None) -> np.ndarray:
        v = self.col(j) if rows is None else self.col(j)[rows]
        bad = v != np.round(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            i = i if rows is None else int(np.flatnonzero(rows)[i])
            raise AvaFormatError(self.path, self.line(i), f"{what} (column {j + 1}) is not an integer: {self.col(j)[i]}")
        return v.astype(np.int64)


def _read_csv_rows(path, ncols: Iterable[int], delimiter: str = ",") -> tuple[list[list[str]], list[int]]:
    """All non-blank rows of `path` and their 1-based line numbers; checks the column count."""
    allowed = set(ncols)
    rows, lines = [], []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter=delimiter), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if not rows and row[0].strip().lower() in _HEADER_FIRST_FIELDS:
                continue  # tolerated header line
            if len(row) not in allowed:
                raise AvaFormatError(path, lineno, f"expected {' or '.join(map(str, sorted(allowed)))} "
                                     f"columns, found {len(row)}: {','.join(row)!r}")
            rows.append(row)
            lines.append(lineno)
    return rows, lines


def _load_csv(path, ncols: tuple[int, ...], names: tuple[str, ...]) -> _CsvTable:
    """Fast path: one column count, no quotes -> numpy's C parser. Else (or on any parse error) a
    row-by-row pass that names the offending line."""
    k = max(ncols)
    with open(path, "rb") as f:
        data = f.read()
    first = data.split(b"\n", 1)[0].split(b",")[0].strip().lower().decode("utf-8", "replace")
    skip = 1 if first in _HEADER_FIRST_FIELDS else 0
    if b'"' not in data:
        buf = np.frombuffer(data, dtype=np.uint8)
        nl = np.flatnonzero(buf == 10)
        ends = np.append(nl, buf.size) if (buf.size and buf[-1] != 10) else nl
        starts = np.concatenate([[0], ends[:-1] + 1])
        cpos = np.flatnonzero(buf == 44)  # comma positions
        per_line = np.searchsorted(cpos, ends) - np.searchsorted(cpos, starts) + 1
        blank = np.array([not data[s:e].strip() for s, e in zip(starts[per_line == 1], ends[per_line == 1])], bool)
        nonblank = np.ones(per_line.size, bool)
        nonblank[np.flatnonzero(per_line == 1)[blank]] = False
        counts = per_line[nonblank][skip:]
        if counts.size == 0:
            return _CsvTable(path, np.zeros(0, str), np.zeros((0, k - 1)), np.zeros(0, np.int64), [])
        if np.all(counts == counts[0]) and counts[0] in ncols:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    num = np.loadtxt(path, delimiter=",", usecols=range(1, counts[0]), dtype=np.float64,
                                     ndmin=2, comments=None, skiprows=skip, encoding="utf-8")
                    video = np.loadtxt(path, delimiter=",", usecols=0, dtype=str, ndmin=1, comments=None,
                                       skiprows=skip, encoding="utf-8")
                if num.shape[1] < k - 1:
                    num = np.concatenate([num, np.full((num.shape[0], k - 1 - num.shape[1]), np.nan)], 1)
                return _CsvTable(path, np.char.strip(video), num, np.full(len(video), counts[0]), None)
            except ValueError:
                pass  # fall through to the slow path, which names the line
    rows, lines = _read_csv_rows(path, ncols)
    num = np.full((len(rows), k - 1), np.nan)
    for r, (row, line) in enumerate(zip(rows, lines)):
        for j in range(1, len(row)):
            try:
                num[r, j - 1] = float(row[j])
            except ValueError:
                raise AvaFormatError(path, line, f"{names[j]} (column {j + 1}) is not a number: {row[j]!r}") from None
    video = np.array([r[0].strip() for r in rows], dtype=str) if rows else np.zeros(0, str)
    return _CsvTable(path, video, num, np.array([len(r) for r in rows], np.int64), lines)


def _clip_boxes(path, box: np.ndarray) -> np.ndarray:
    if box.size == 0:
        return box
    outside = (box < 0.0) | (box > 1.0)
    n = int(np.count_nonzero(outside))
    if n:
        warnings.warn(f"{path}: clipped {n} box coordinate value(s) outside [0, 1]", stacklevel=3)
        box = np.clip(box, 0.0, 1.0)
    return box


_BOX_NAMES = ("video", "timestamp", "x1", "y1", "x2", "y2")


def _parse_common(t: _CsvTable):
    """video, timestamp, box (clipped) from columns 0..5."""
    return t.video, t.col(1), _clip_boxes(t.path, t.num[:, 1:5]).astype(np.float32)


def _check_labels(t: _CsvTable, ids: np.ndarray, label_map: "LabelMap | None", col: int) -> None:
    if label_map is None or ids.size == 0:
        return
    bad = ~np.isin(ids, np.asarray(label_map.ids, dtype=np.int64))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AvaFormatError(t.path, t.line(i), f"label id {ids[i]} (column {col + 1}) is not in the label map")


def _write_csv(path, columns: list[list[str]]) -> None:
    # Write to a temporary file then rename, so a failure never leaves a half-written CSV behind.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        f.writelines(",".join(parts) + "\n" for parts in zip(*columns))
    os.replace(tmp, path)


def _box_strings(box: np.ndarray) -> list[list[str]]:
    # Shortest repr of the float32 values ("0.077", not "0.0769999996"): exact round trip.
    b = np.asarray(box, dtype=np.float32).reshape(-1, 4).astype(str)
    return [b[:, j].tolist() for j in range(4)]


def _str_list(a: np.ndarray) -> list[str]:
    return np.asarray(a).astype(str).tolist()


# ----------------------------------------------------------------------------- label map

@dataclass
class LabelMap:
    ids: list[int]
    names: list[str]

    def __post_init__(self):
        self.ids = [int(i) for i in self.ids]
        self.names = [str(n) for n in self.names]
        if len(self.ids) != len(self.names):
            raise ValueError(f"LabelMap: {len(self.ids)} ids but {len(self.names)} names")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("LabelMap: duplicate ids")

    def __len__(self) -> int:
        return len(self.ids)

    def name(self, label_id: int) -> str:
        return self.names[self.ids.index(int(label_id))]


_ITEM_RE = re.compile(r"item\s*\{(.*?)\}", re.S)
_FIELD_RE = re.compile(r"(\w+)\s*:\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s}]+)")


def read_label_map(path) -> LabelMap:
    """pbtxt with `item { name: "..." id: N }` or `item { name: "..." label_id: N label_type: T }`."""
    text = open(path).read()
    ids, names = [], []
    for m in _ITEM_RE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        kv = {k: v for k, v in _FIELD_RE.findall(m.group(1))}
        raw_id = kv.get("id", kv.get("label_id"))
        if "name" not in kv or raw_id is None:
            raise AvaFormatError(path, line, "label map item needs `name` and `id` (or `label_id`)")
        try:
            ids.append(int(raw_id))
        except ValueError:
            raise AvaFormatError(path, line, f"label id is not an integer: {raw_id!r}") from None
        names.append(kv["name"][1:-1] if kv["name"][:1] in "\"'" else kv["name"])
        if ids[-1] in ids[:-1]:
            raise AvaFormatError(path, line, f"duplicate label id {ids[-1]}")
    if not ids:
        raise AvaFormatError(path, None, "no `item { ... }` entries found in label map")
    return LabelMap(ids, names)


def write_label_map(path, label_map: LabelMap) -> None:
    with open(path, "w") as f:
        for i, n in zip(label_map.ids, label_map.names):
            f.write('item {\n  name: "%s"\n  id: %d\n}\n' % (n.replace('"', '\\"'), i))


# ----------------------------------------------------------------------------- annotations

def read_annotations(path, label_map: LabelMap | None = None) -> Annotations:
    """AVA ground truth CSV (7 or 8 columns; missing person_id -> -1)."""
    t = _load_csv(path, (7, 8), _BOX_NAMES + ("action_id", "person_id"))
    video, ts, box = _parse_common(t)
    action = t.int_col(6, "action_id")
    _check_labels(t, action, label_map, 6)
    person = np.full(len(t), -1, dtype=np.int64)
    has_p = t.ncol == 8
    if has_p.any():
        person[has_p] = t.int_col(7, "person_id", rows=has_p)
    return Annotations(video, ts, box, action, person)


def write_annotations(path, ann: Annotations) -> None:
    b = _box_strings(ann.box)
    _write_csv(path, [_str_list(ann.video), _format_timestamps(ann.timestamp), *b,
                      _str_list(ann.action), _str_list(ann.person)])


# ----------------------------------------------------------------------------- predictions / objects

def read_predictions(path, label_map: LabelMap | None = None) -> Predictions:
    """`video,timestamp,x1,y1,x2,y2,action_id,score` (the AVA submission format)."""
    t = _load_csv(path, (8,), _BOX_NAMES + ("action_id", "score"))
    video, ts, box = _parse_common(t)
    action = t.int_col(6, "action_id")
    _check_labels(t, action, label_map, 6)
    return Predictions(video, ts, box, action, t.col(7))


def write_predictions(path, preds: Predictions) -> None:
    _write_csv(path, [_str_list(preds.video), _format_timestamps(preds.timestamp), *_box_strings(preds.box),
                      _str_list(preds.action), _str_list(np.asarray(preds.score, np.float32))])


def read_objects(path) -> Objects:
    """`video,timestamp,x1,y1,x2,y2,class_id,score` (object detector output)."""
    t = _load_csv(path, (8,), _BOX_NAMES + ("class_id", "score"))
    video, ts, box = _parse_common(t)
    return Objects(video, ts, box, t.int_col(6, "class_id"), t.col(7))


def write_objects(path, objs: Objects) -> None:
    _write_csv(path, [_str_list(objs.video), _format_timestamps(objs.timestamp), *_box_strings(objs.box),
                      _str_list(objs.class_id), _str_list(np.asarray(objs.score, np.float32))])


# ----------------------------------------------------------------------------- proposals

def read_proposals(path) -> Proposals:
    """Person proposals with scores; format chosen by extension (.csv / .pkl|.pickle / .json)."""
    ext = os.path.splitext(str(path))[1].lower()
    readers = {".csv": read_proposals_csv, ".pkl": read_proposals_pickle, ".pickle": read_proposals_pickle,
               ".json": read_proposals_json}
    if ext not in readers:
        raise AvaFormatError(path, None, f"unknown proposals format {ext!r}; valid: {sorted(readers)}")
    return readers[ext](path)


def read_proposals_csv(path) -> Proposals:
    """PySlowFast `video,ts,x1,y1,x2,y2,action(-1 unlabeled),score`; also 7 columns (no score -> 1).

    The file repeats a box once per action; identical boxes of one keyframe are kept once (the first).
    """
    t = _load_csv(path, (7, 8), _BOX_NAMES + ("action_id", "score"))
    video, ts, box = _parse_common(t)
    score = np.where(t.ncol == 8, t.col(7), 1.0)
    if len(t):
        _, vid_idx = np.unique(video, return_inverse=True)
        key = np.column_stack([vid_idx.astype(np.float64), timestamp_keys(ts).astype(np.float64),
                               box.astype(np.float64)])
        _, first = np.unique(key, axis=0, return_index=True)
        keep = np.sort(first)
        video, ts, box, score = video[keep], ts[keep], box[keep], score[keep]
    return Proposals(video, ts, box, score)


def read_proposals_pickle(path) -> Proposals:
    """MMAction2 proposals: `{"<video>,<%04d ts>": ndarray (N, 5) x1,y1,x2,y2,score}` (N, 4: score 1)."""
    with open(path, "rb") as f:
        data = pickle.load(f)
    if not isinstance(data, dict):
        raise AvaFormatError(path, None, f"expected a dict of '<video>,<timestamp>' -> array, got {type(data).__name__}")
    videos, tss, boxes, scores = [], [], [], []
    for k, arr in data.items():
        parts = str(k).rsplit(",", 1)
        try:
            t = float(parts[1])
        except (IndexError, ValueError):
            raise AvaFormatError(path, None, f"key {k!r} is not '<video>,<timestamp>'") from None
        a = np.asarray(arr, dtype=np.float64).reshape(len(arr), -1) if len(arr) else np.zeros((0, 5))
        if a.shape[1] not in (4, 5):
            raise AvaFormatError(path, None, f"key {k!r}: expected (N, 5) or (N, 4) array, got {a.shape}")
        videos += [parts[0]] * len(a)
        tss.append(np.full(len(a), t))
        boxes.append(a[:, :4])
        scores.append(a[:, 4] if a.shape[1] == 5 else np.ones(len(a)))
    box = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    return Proposals(np.array(videos, dtype=str), np.concatenate(tss) if tss else np.zeros(0),
                     _clip_boxes(path, box), np.concatenate(scores) if scores else np.zeros(0))


def _video_ts_from_file_name(name: str) -> tuple[str, float]:
    # `<video>/<video>_<timestamp>.jpg` (the video id may contain `_`, the timestamp never does).
    stem = os.path.splitext(os.path.basename(name))[0]
    parent = os.path.basename(os.path.dirname(name))
    video, ts = stem.rsplit("_", 1)
    return (parent or video), float(ts)


def read_proposals_json(path) -> Proposals:
    """Person proposals as JSON, in either of two layouts.

    1. Results list (or `{"results": [...]}`): `[{"video": str, "timestamp": num, "bbox": [x, y, w, h],
       "score": num, "width": W, "height": H}]`. With `width`/`height` the bbox is in pixels and is
       normalised by them; without, it is already normalised.
    2. COCO: `{"images": [{"id", "file_name", "width", "height"[, "video", "timestamp"]}],
       "annotations": [{"image_id", "bbox": [x, y, w, h], "score"}]}`. An image's keyframe is its
       `video`/`timestamp` keys, else parsed from `file_name` = `<video>/<video>_<timestamp>.jpg`.
       bbox is in pixels when the image has width/height, else normalised. Missing score -> 1.
    Every entry is taken as a person box (filter other categories before writing the file).
    """
    with open(path) as f:
        data = json.load(f)
    videos, tss, boxes, scores = [], [], [], []
    if isinstance(data, dict) and "images" in data:
        images = {}
        for i, im in enumerate(data["images"]):
            try:
                if "video" in im and "timestamp" in im:
                    v, t = str(im["video"]), float(im["timestamp"])
                else:
                    v, t = _video_ts_from_file_name(im["file_name"])
            except (KeyError, ValueError):
                raise AvaFormatError(path, None, f"images[{i}]: needs video/timestamp keys or a file_name "
                                     "'<video>/<video>_<timestamp>.jpg'") from None
            images[im.get("id", i)] = (v, t, im.get("width"), im.get("height"))
        entries = data.get("annotations", [])
        for j, a in enumerate(entries):
            if a.get("image_id") not in images:
                raise AvaFormatError(path, None, f"annotations[{j}]: unknown image_id {a.get('image_id')!r}")
            v, t, w, h = images[a["image_id"]]
            videos.append(v), tss.append(t), boxes.append(_xywh_norm(path, j, a, w, h)), scores.append(a.get("score", 1.0))
    else:
        entries = data.get("results") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise AvaFormatError(path, None, "expected a COCO dict with 'images', a 'results' list, or a list")
        for j, a in enumerate(entries):
            try:
                videos.append(str(a["video"])), tss.append(float(a["timestamp"]))
            except (KeyError, TypeError, ValueError):
                raise AvaFormatError(path, None, f"entry {j}: needs 'video' and numeric 'timestamp'") from None
            boxes.append(_xywh_norm(path, j, a, a.get("width"), a.get("height")))
            scores.append(a.get("score", 1.0))
    box = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    return Proposals(np.array(videos, dtype=str), np.array(tss, dtype=np.float64), _clip_boxes(path, box),
                     np.array(scores, dtype=np.float64))


def _xywh_norm(path, j, entry, w, h) -> list[float]:
    try:
        x, y, bw, bh = (float(v) for v in entry["bbox"])
    except (KeyError, TypeError, ValueError):
        raise AvaFormatError(path, None, f"entry {j}: 'bbox' must be [x, y, w, h]") from None
    if w and h:
        x, bw, y, bh = x / w, bw / w, y / h, bh / h
    return [x, y, x + bw, y + bh]


def write_proposals_csv(path, props: Proposals) -> None:
    """PySlowFast layout with action -1 (unlabeled), one row per box."""
    n = len(props)
    _write_csv(path, [_str_list(props.video), _format_timestamps(props.timestamp), *_box_strings(props.box),
                      ["-1"] * n, _str_list(np.asarray(props.score, np.float32))])


# ----------------------------------------------------------------------------- excluded timestamps

def read_excluded(path) -> set[tuple[str, int]]:
    """`video,timestamp` rows -> {(video, timestamp_key)}."""
    t = _load_csv(path, (2,), ("video", "timestamp"))
    return set(zip(t.video.tolist(), timestamp_keys(t.col(1)).tolist()))


def write_excluded(path, pairs) -> None:
    """`pairs` of (video, t): an integer t is a `timestamp_key` (ms), a float t is seconds."""
    out_v, out_t = [], []
    for v, t in sorted(pairs):
        sec = t / 1000.0 if isinstance(t, (int, np.integer)) else float(t)
        out_v.append(str(v)), out_t.append(format_timestamp(sec))
    _write_csv(path, [out_v, out_t])


# ----------------------------------------------------------------------------- PySlowFast frame lists

@dataclass
class FrameList:
    original_video_id: np.ndarray  # (N,) str
    video_idx: np.ndarray  # (N,) int64
    frame_id: np.ndarray  # (N,) int64
    path: np.ndarray  # (N,) str, relative to the frame directory
    labels: np.ndarray  # (N,) str, comma-separated label ids or "" / '""'

    def __len__(self) -> int:
        return len(self.frame_id)


def read_frame_list(path) -> FrameList:
    """PySlowFast `frame_lists/{train,val}.csv`: space separated with a header line."""
    rows, lines = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if not rows and not lines and parts[0] in _HEADER_FIRST_FIELDS:
                continue
            if len(parts) not in (4, 5):
                raise AvaFormatError(path, lineno, f"expected 5 space-separated columns "
                                     f"(original_vido_id video_id frame_id path labels), found {len(parts)}")
            rows.append(parts if len(parts) == 5 else parts + [""])
            lines.append(lineno)
    ints = np.zeros((len(rows), 2), np.int64)
    for r, (row, line) in enumerate(zip(rows, lines)):
        try:
            ints[r] = int(row[1]), int(row[2])
        except ValueError:
            raise AvaFormatError(path, line, f"video_id / frame_id not integers: {row[1]!r} {row[2]!r}") from None
    vid, fid = ints[:, 0], ints[:, 1]
    return FrameList(np.array([r[0] for r in rows], dtype=str), vid, fid,
                     np.array([r[3] for r in rows], dtype=str), np.array([r[4] for r in rows], dtype=str))


def write_frame_list(path, fl: FrameList) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("original_vido_id video_id frame_id path labels\n")
        for o, v, i, p, lab in zip(fl.original_video_id.tolist(), fl.video_idx.tolist(), fl.frame_id.tolist(),
                                   fl.path.tolist(), fl.labels.tolist()):
            f.write(f"{o} {v} {i} {p} {lab or chr(34) * 2}\n")
    os.replace(tmp, path)
