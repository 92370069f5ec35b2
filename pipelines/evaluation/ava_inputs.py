"""What `evaluate` checks in its input files before it scores them (pipelines/evaluation/ava.py):
that the label map is the GT's, that GT boxes are normalised, that no predicted box is inverted,
and the class-groups JSON of `--groups`. Each refusal is one line naming the file (and line)."""
from __future__ import annotations

import json

import numpy as np

from stagecache.core.errors import UserError
from stagecache.extract.formats.csv_table import AvaFormatError

__all__ = ["MAX_GT_OUTSIDE_LABEL_MAP", "GroupsFileError", "check_gt_in_unit_square", "check_label_map_share",
           "read_groups_file", "refuse_inverted_predictions"]

# More than this share of the GT rows outside the label map: the label map is not the dataset's.
MAX_GT_OUTSIDE_LABEL_MAP = 0.5


class GroupsFileError(UserError, ValueError):
    """A class-groups JSON that is not `{"<group>": [ids]}`; the message names the file."""


def check_label_map_share(gt_csv, label_map_path, g_act: np.ndarray, g_in: np.ndarray, n_classes: int) -> None:
    """Refuse a label map that is not the GT's: none of its classes has a GT row, or most GT rows
    (over `MAX_GT_OUTSIDE_LABEL_MAP`) are of classes it lacks (AVA's 80-class GT against the
    60-class list leaves out about 1%). Scoring then would print a mAP of a few classes and n/a rows."""
    n_out = int(g_in.size - np.count_nonzero(g_in))
    if n_out == 0 or (g_in.any() and n_out <= MAX_GT_OUTSIDE_LABEL_MAP * g_in.size):
        return
    outside = np.unique(g_act[~g_in])
    shown = ",".join(map(str, outside[:8].tolist())) + (" ..." if outside.size > 8 else "")
    what = ("the ground truth has no rows of the label map's classes" if not g_in.any() else
            f"{n_out} of the ground truth's {g_in.size} rows ({100 * n_out / g_in.size:.0f}%) are of classes not in "
            "the label map")
    raise AvaFormatError(gt_csv, None, f"{what} ({label_map_path}, {n_classes} classes; GT class ids outside "
                                       f"it: {shown}); give the dataset's label map with --label-map")


def _first_bad(table, bad_of_chunk) -> int | None:
    """The first row (table order) where `bad_of_chunk(c)` (a bool array over chunk c's rows) holds."""
    for c in range(len(table.offsets) - 1):
        bad = bad_of_chunk(c)
        if bad.any():
            return int(table.offsets[c]) + int(np.flatnonzero(bad)[0])
    return None


def check_gt_in_unit_square(gt) -> None:
    """GT boxes are normalised (x1, y1, x2, y2 in [0, 1]): a coordinate outside is a file in pixels or
    in another layout. The reference evaluators would score it as given; we refuse it with its line."""
    cols = [gt.parts(j) for j in range(2, 6)]
    i = _first_bad(gt, lambda c: np.logical_or.reduce([(col[c] < 0.0) | (col[c] > 1.0) for col in cols]))
    if i is not None:
        x1, y1, x2, y2 = (float(gt.col(j)[i]) for j in range(2, 6))
        raise AvaFormatError(gt.path, gt.line(i), f"box x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g} has a "
                             "coordinate outside [0, 1] (boxes are normalised to the frame)")


def refuse_inverted_predictions(pr) -> None:
    """A predicted box with x2 < x1 or y2 < y1 (the official and PySlowFast evaluators drop it without
    a word, MMAction2's raises): a writer that swapped coordinates, whose rows would silently score
    nothing, so the file is refused with its line. Empty boxes (x1 == x2 or y1 == y2) stay dropped
    as the official evaluator drops them: a detector clipped at the frame edge writes them."""
    x1, y1, x2, y2 = (pr.parts(j) for j in range(2, 6))
    i = _first_bad(pr, lambda c: (x2[c] < x1[c]) | (y2[c] < y1[c]))
    if i is not None:
        b = [float(pr.col(j)[i]) for j in range(2, 6)]
        raise AvaFormatError(pr.path, pr.line(i), f"inverted box x1={b[0]:g}, y1={b[1]:g}, x2={b[2]:g}, "
                             f"y2={b[3]:g} (x2 < x1 or y2 < y1)")


def read_groups_file(path) -> dict[str, list[int]]:
    """A class-groups JSON `{"<group>": [ids]}` (or `{"groups": {...}}`; keys starting with `_` are
    comments), every id an integer; anything else is a `GroupsFileError` naming the file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GroupsFileError(f"{path}: not a readable class-groups JSON ({e})") from None
    groups = data.get("groups", data) if isinstance(data, dict) else None
    if not isinstance(groups, dict):
        raise GroupsFileError(f"{path}: expected a class-groups JSON {{\"<group>\": [ids]}}")
    out = {}
    for g, v in groups.items():
        if str(g).startswith("_"):
            continue
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise GroupsFileError(f"{path}: group {g!r} must be a list of integer class ids, got {v!r:.60}")
        out[str(g)] = [int(i) for i in v]
    return out
