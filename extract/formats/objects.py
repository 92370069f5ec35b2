"""Object detections: `video,timestamp,x1,y1,x2,y2,class_id,score` (object detector output)."""
from __future__ import annotations

import numpy as np

from stagecache.extract.formats.common import BOX_NAMES, box_strings, check_values, parse_common, str_list, write_csv
from stagecache.extract.formats.csv_table import load_csv
from stagecache.extract.formats.tables import Objects, _format_timestamps


def read_objects(path) -> Objects:
    """`video,timestamp,x1,y1,x2,y2,class_id,score` (object detector output)."""
    t = load_csv(path, (8,), BOX_NAMES + ("class_id", "score"))
    check_values(t, BOX_NAMES + ("class_id", "score"), boxes=True)
    video, ts, box = parse_common(t)
    return Objects(video, ts, box, t.int_col(6, "class_id"), t.col(7))


def write_objects(path, objs: Objects) -> None:
    write_csv(path, [str_list(objs.video), _format_timestamps(objs.timestamp), *box_strings(objs.box),
                     str_list(objs.class_id), str_list(np.asarray(objs.score, np.float32))])
