"""Timestamp keys and the one timestamp tolerance.

AVA timestamps are float seconds (`902.0`). Two timestamps are the same keyframe when their integer
milliseconds agree (the key: `timestamp_key` / `timestamp_keys`, re-exported by `extract.ava_io`),
and a time window edge `|t_i - t_j| <= radius` admits anything within `TIME_EPS` (1 ms, the key's
resolution) so a neighbour exactly on the edge is never lost to float rounding. Both stages import
them from here (the heads need only the tolerance).
"""
from __future__ import annotations

import numpy as np

__all__ = ["TIME_EPS", "timestamp_key", "timestamp_keys", "same_timestamp"]

TIME_EPS = 1e-3  # seconds: the resolution of a timestamp key


def timestamp_key(ts) -> int:
    """Integer milliseconds of a timestamp given as number or string (`902`, `0902`, `902.0`)."""
    return int(round(float(ts) * 1000.0))


def timestamp_keys(ts: np.ndarray) -> np.ndarray:
    """Vectorised `timestamp_key`: (N,) float seconds -> (N,) int64 milliseconds."""
    return np.rint(np.asarray(ts, dtype=np.float64) * 1000.0).astype(np.int64)


def same_timestamp(a, b) -> bool:
    return timestamp_key(a) == timestamp_key(b)
