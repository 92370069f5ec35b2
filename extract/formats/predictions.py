"""Predictions in the AVA submission format: `video,timestamp,x1,y1,x2,y2,action_id,score`."""
from __future__ import annotations

import re

import numpy as np

from stagecache.extract.formats.common import BOX_NAMES, box_strings, check_labels, check_values, parse_common, str_list, write_csv
from stagecache.extract.formats.csv_table import AvaFormatError, CsvTable, load_csv
from stagecache.extract.formats.label_map import LabelMap
from stagecache.extract.formats.tables import Predictions, _format_timestamps


def refuse_gt_as_predictions(t: CsvTable) -> None:
    """An 8-column file whose last column is written as integers (person ids) is a GT file, not scores."""
    parts = [p for p in t.parts(7) if p.size] if len(t) else []
    if not parts or not np.all(parts[0][:4096] == np.round(parts[0][:4096])):  # prefix: cheap exit
        return
    if not all(np.all(p == np.round(p)) for p in parts):
        return
    with open(t.path, "rb") as f:
        head = [ln.rstrip(b"\r\n") for ln in f.readlines(1 << 16)]
    last = [ln.rsplit(b",", 1)[-1].strip() for ln in head if ln.strip()][1:] if t._skip else \
        [ln.rsplit(b",", 1)[-1].strip() for ln in head if ln.strip()]
    if last and all(re.fullmatch(rb"[+-]?\d+", x) for x in last):
        raise AvaFormatError(t.path, None, "this is a ground-truth file (its 8th column holds integer person "
                             "ids, not scores); give it as --gt and a predictions CSV as --pred")


def read_predictions(path, label_map: LabelMap | None = None) -> Predictions:
    """`video,timestamp,x1,y1,x2,y2,action_id,score` (the AVA submission format)."""
    t = load_csv(path, (8,), BOX_NAMES + ("action_id", "score"), int_cols=(6,))
    check_values(t, BOX_NAMES + ("action_id", "score"), boxes=False)  # the evaluator drops empty boxes
    refuse_gt_as_predictions(t)
    video, ts, box = parse_common(t)
    action = t.int_col(6, "action_id")
    check_labels(t, action, label_map, 6)
    return Predictions(video, ts, box, action, t.col(7))


def write_predictions(path, preds: Predictions) -> None:
    write_csv(path, [str_list(preds.video), _format_timestamps(preds.timestamp), *box_strings(preds.box),
                     str_list(preds.action), str_list(np.asarray(preds.score, np.float32))])


def read_predictions_table(path) -> CsvTable:
    """Prediction rows as parsed (float64, unclipped, video ids as written), validated as `read_predictions`."""
    t = load_csv(path, (8,), BOX_NAMES + ("action_id", "score"), int_cols=(6,), strip_ids=False)
    check_values(t, BOX_NAMES + ("action_id", "score"), boxes=False)
    refuse_gt_as_predictions(t)
    if not t.is_int(6):  # parsed as floats ("3.0"): checked (and converted once) here
        t.int_col(6, "action_id")
    return t
