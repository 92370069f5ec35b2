"""Runs of rows with one keyframe: how a file's rows are grouped before anything is joined."""
from __future__ import annotations

import numpy as np


def table_runs(code_parts: list[np.ndarray], ts_parts: list[np.ndarray], offsets: np.ndarray) -> np.ndarray:
    """(R + 1,) start rows of the runs of equal (video code, timestamp), computed chunk by chunk
    (`offsets`: each chunk's first row, then the row count)."""
    starts, prev = [], None
    for c, (codes, ts) in enumerate(zip(code_parts, ts_parts)):
        if codes.size == 0:
            continue
        if prev is None or prev != (codes[0], ts[0]):
            starts.append(offsets[c:c + 1])
        starts.append(np.flatnonzero((codes[1:] != codes[:-1]) | (ts[1:] != ts[:-1])) + (1 + offsets[c]))
        prev = (codes[-1], ts[-1])
    return np.concatenate(starts + [offsets[-1:]]).astype(np.int64)
