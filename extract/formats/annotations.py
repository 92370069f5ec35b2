"""AVA ground truth: `video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]` (ava_train_v2.2.csv)."""
from __future__ import annotations

import numpy as np

from stagecache.extract.formats.common import (BOX_NAMES, box_strings, check_labels, check_values, parse_common, str_list,
                                    write_csv)
from stagecache.extract.formats.csv_table import CsvTable, load_csv
from stagecache.extract.formats.label_map import LabelMap
from stagecache.extract.formats.tables import Annotations, _format_timestamps


def read_annotations(path, label_map: LabelMap | None = None) -> Annotations:
    """AVA ground truth CSV (7 or 8 columns; missing person_id -> -1)."""
    t = load_csv(path, (7, 8), BOX_NAMES + ("action_id", "person_id"))
    check_values(t, BOX_NAMES + ("action_id", "person_id"), boxes=True)
    video, ts, box = parse_common(t)
    action = t.int_col(6, "action_id")
    check_labels(t, action, label_map, 6)
    person = np.full(len(t), -1, dtype=np.int64)
    has_p = t.ncol == 8
    if has_p.any():
        person[has_p] = t.int_col(7, "person_id", rows=has_p)
    return Annotations(video, ts, box, action, person)


def read_annotations_table(path) -> CsvTable:
    """GT rows as parsed (float64, unclipped, video ids as written: what the evaluators compare),
    validated as `read_annotations`."""
    t = load_csv(path, (7, 8), BOX_NAMES + ("action_id", "person_id"), strip_ids=False)
    check_values(t, BOX_NAMES + ("action_id", "person_id"), boxes=True)
    t.int_col(6, "action_id")
    return t


def write_annotations(path, ann: Annotations) -> None:
    b = box_strings(ann.box)
    write_csv(path, [str_list(ann.video), _format_timestamps(ann.timestamp), *b,
                     str_list(ann.action), str_list(ann.person)])
