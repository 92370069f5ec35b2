"""Person proposals: PySlowFast CSV, MMAction2 pickle and COCO / results-list JSON (`read_proposals`
chooses by extension); written back as the PySlowFast CSV."""
from __future__ import annotations

import json
import os

import numpy as np

from stagecache.extract.formats.common import BOX_NAMES, box_strings, check_values, clip_boxes, parse_common, str_list, write_csv
from stagecache.extract.formats.csv_table import AvaFormatError, load_csv
from stagecache.core.timekeys import timestamp_keys
from stagecache.extract.formats.tables import Proposals, _format_timestamps


def read_proposals(path, *, trust_pickle: bool = False) -> Proposals:
    """Person proposals with scores; format chosen by extension (.csv / .pkl|.pickle / .json).
    `trust_pickle`: see `read_proposals_pickle`."""
    ext = os.path.splitext(str(path))[1].lower()
    readers = {".csv": read_proposals_csv, ".pkl": read_proposals_pickle, ".pickle": read_proposals_pickle,
               ".json": read_proposals_json}
    if ext not in readers:
        raise AvaFormatError(path, None, f"unknown proposals format {ext!r}; valid: {sorted(readers)}")
    if readers[ext] is read_proposals_pickle:
        return read_proposals_pickle(path, trust=trust_pickle)
    return readers[ext](path)


def read_proposals_csv(path) -> Proposals:
    """PySlowFast `video,ts,x1,y1,x2,y2,action(-1 unlabeled),score`; also 7 columns (no score -> 1).

    The file repeats a box once per action; identical boxes of one keyframe are kept once (the first).
    """
    t = load_csv(path, (7, 8), BOX_NAMES + ("action_id", "score"), one_count=True)
    check_values(t, BOX_NAMES + ("action_id", "score"), boxes=True)
    video, ts, box = parse_common(t)
    score = np.where(t.ncol == 8, t.col(7), 1.0)
    if len(t):
        _, vid_idx = np.unique(video, return_inverse=True)
        key = np.column_stack([vid_idx.astype(np.float64), timestamp_keys(ts).astype(np.float64),
                               box.astype(np.float64)])
        _, first = np.unique(key, axis=0, return_index=True)
        keep = np.sort(first)
        video, ts, box, score = video[keep], ts[keep], box[keep], score[keep]
    return Proposals(video, ts, box, score)


def read_proposals_pickle(path, *, trust: bool = False) -> Proposals:
    """MMAction2 proposals: `{"<video>,<%04d ts>": ndarray (N, 5) x1,y1,x2,y2,score}` (N, 4: score 1).
    Read with the restricted unpickler (numpy arrays and containers only) unless `trust`."""
    from stagecache.core.safe_pickle import load_pickle

    data = load_pickle(path, trust=trust)
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
                     clip_boxes(path, box), np.concatenate(scores) if scores else np.zeros(0))


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
    return Proposals(np.array(videos, dtype=str), np.array(tss, dtype=np.float64), clip_boxes(path, box),
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
    write_csv(path, [str_list(props.video), _format_timestamps(props.timestamp), *box_strings(props.box),
                     ["-1"] * n, str_list(np.asarray(props.score, np.float32))])
