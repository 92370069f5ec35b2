"""Excluded timestamps: `video,timestamp` rows (ava_val_excluded_timestamps_v2.2.csv)."""
from __future__ import annotations

import numpy as np

from stagecache.extract.formats.common import write_csv
from stagecache.extract.formats.csv_table import load_csv
from stagecache.core.timekeys import timestamp_keys
from stagecache.extract.formats.tables import format_timestamp


def read_excluded(path) -> set[tuple[str, int]]:
    """`video,timestamp` rows -> {(video, timestamp_key)}."""
    t = load_csv(path, (2,), ("video", "timestamp"))
    t.check_finite(("video", "timestamp"))
    return set(zip(t.video.tolist(), timestamp_keys(t.col(1)).tolist()))


def write_excluded(path, pairs) -> None:
    """`pairs` of (video, t): an integer t is a `timestamp_key` (ms), a float t is seconds."""
    out_v, out_t = [], []
    for v, t in sorted(pairs):
        sec = t / 1000.0 if isinstance(t, (int, np.integer)) else float(t)
        out_v.append(str(v)), out_t.append(format_timestamp(sec))
    write_csv(path, [out_v, out_t])
