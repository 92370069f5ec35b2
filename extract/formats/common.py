"""Helpers shared by the box CSV formats (annotations, predictions, objects, proposals, excluded):
box clipping, value checks, label checks and the atomic CSV writer."""
from __future__ import annotations

import warnings

import numpy as np

from stagecache.core.atomic import atomic_open
from stagecache.extract.formats.csv_table import AvaFormatError, CsvTable
from stagecache.extract.formats.label_map import LabelMap


def clip_boxes(path, box: np.ndarray) -> np.ndarray:
    if box.size == 0:
        return box
    outside = (box < 0.0) | (box > 1.0)
    n = int(np.count_nonzero(outside))
    if n:
        warnings.warn(f"{path}: clipped {n} box coordinate value(s) outside [0, 1]", stacklevel=3)
        box = np.clip(box, 0.0, 1.0)
    return box


BOX_NAMES = ("video", "timestamp", "x1", "y1", "x2", "y2")


def check_values(t: CsvTable, names: tuple[str, ...], boxes: bool) -> None:
    """NaN / inf in any column, and (`boxes`) x2 < x1 or y2 < y1: errors naming file and line."""
    t.check_finite(names)
    if boxes:
        t.check_boxes(2)


def parse_common(t: CsvTable):
    """video, timestamp, box (clipped) from columns 0..5."""
    return t.video, t.col(1), clip_boxes(t.path, t.num[:, 1:5]).astype(np.float32)


def check_labels(t: CsvTable, ids: np.ndarray, label_map: "LabelMap | None", col: int) -> None:
    if label_map is None or ids.size == 0:
        return
    bad = ~np.isin(ids, np.asarray(label_map.ids, dtype=np.int64))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AvaFormatError(t.path, t.line(i), f"label id {ids[i]} (column {col + 1}) is not in the label map")


def write_csv(path, columns: list[list[str]]) -> None:
    # Atomic, so a failure never leaves a half-written CSV behind.
    with atomic_open(path, "w", newline="") as f:
        f.writelines(",".join(parts) + "\n" for parts in zip(*columns))


def box_strings(box: np.ndarray) -> list[list[str]]:
    # Shortest repr of the float32 values ("0.077", not "0.0769999996"): exact round trip.
    b = np.asarray(box, dtype=np.float32).reshape(-1, 4).astype(str)
    return [b[:, j].tolist() for j in range(4)]


def str_list(a: np.ndarray) -> list[str]:
    return np.asarray(a).astype(str).tolist()
