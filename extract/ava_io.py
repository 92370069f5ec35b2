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
file (`read_annotations_table` / `read_predictions_table` give the evaluator the float64 values as
written). Malformed rows, NaN / inf values and inverted boxes (x2 < x1 or y2 < y1, except in
predictions) raise `AvaFormatError` naming file and line.

This module is the formats' one public face (`from extract import ava_io`); the code lives in
`extract/formats/`, one module per format family: `annotations`, `predictions`, `objects`,
`proposals` (CSV, MMAction2 pickle, COCO JSON), `excluded`, `label_map`, `frame_list`; the tables
and timestamp keys in `tables`, CSV parsing (pyarrow) in `csv_table`, the box-CSV helpers in `common`.
A new input format goes in a module there and is re-exported here.
"""
from __future__ import annotations

from stagecache.extract.formats.annotations import read_annotations, read_annotations_table, write_annotations
from stagecache.extract.formats.csv_table import AvaFormatError
from stagecache.extract.formats.excluded import read_excluded, write_excluded
from stagecache.extract.formats.frame_list import FrameList, read_frame_list, write_frame_list
from stagecache.extract.formats.label_map import LabelMap, read_label_map, write_label_map
from stagecache.extract.formats.objects import read_objects, write_objects
from stagecache.extract.formats.predictions import (read_predictions, read_predictions_table, refuse_gt_as_predictions,
                                         write_predictions)
from stagecache.extract.formats.proposals import (read_proposals, read_proposals_csv, read_proposals_json, read_proposals_pickle,
                                       write_proposals_csv)
from stagecache.extract.formats.tables import (Annotations, Objects, Predictions, Proposals, format_timestamp, same_timestamp,
                                    timestamp_key, timestamp_keys)

__all__ = [
    "AvaFormatError", "timestamp_key", "timestamp_keys", "same_timestamp", "format_timestamp",
    "LabelMap", "read_label_map", "write_label_map",
    "Annotations", "read_annotations", "write_annotations", "read_annotations_table", "read_predictions_table",
    "Proposals", "read_proposals", "read_proposals_csv", "read_proposals_pickle",
    "read_proposals_json", "write_proposals_csv",
    "Objects", "read_objects", "write_objects",
    "Predictions", "read_predictions", "write_predictions", "refuse_gt_as_predictions",
    "read_excluded", "write_excluded",
    "FrameList", "read_frame_list", "write_frame_list",
]
