"""Timestamps as numbers, and the column-oriented tables of the AVA CSV formats (re-exported by `extract.ava_io`)."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

# The keys live in core.timekeys (their one home); re-exported here and by extract.ava_io.
from stagecache.core.timekeys import same_timestamp, timestamp_key, timestamp_keys  # noqa: F401

# ----------------------------------------------------------------------------- timestamps

def format_timestamp(ts: float) -> str:
    t = float(ts)
    if t.is_integer():
        return "%04d" % int(t)
    return repr(t)


def _format_timestamps(ts: np.ndarray) -> list[str]:
    # Cache per distinct value: a CSV repeats each keyframe's timestamp many times.
    uniq, inv = np.unique(np.asarray(ts, dtype=np.float64), return_inverse=True)
    strs = [format_timestamp(t) for t in uniq.tolist()]
    return [strs[i] for i in inv.ravel().tolist()]


# ----------------------------------------------------------------------------- column tables

class _Table:
    """Mixin for the column-oriented dataclasses: one row per CSV row, all columns equal length."""

    def __len__(self) -> int:
        return len(self.timestamp)

    def select(self, index):
        """Rows by boolean mask or integer index array (a new object)."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def keys(self) -> np.ndarray:
        """(N,) int64 timestamp keys (milliseconds)."""
        return timestamp_keys(self.timestamp)


def _col(values, dtype) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


@dataclass
class Annotations(_Table):
    video: np.ndarray  # (N,) str
    timestamp: np.ndarray  # (N,) float64 seconds
    box: np.ndarray  # (N, 4) float32 normalised x1, y1, x2, y2
    action: np.ndarray  # (N,) int64 label-map id
    person: np.ndarray  # (N,) int64, -1 when the file has no person_id column

    def __post_init__(self):
        self.video = _col(self.video, str)
        self.timestamp = _col(self.timestamp, np.float64)
        self.box = _col(self.box, np.float32).reshape(-1, 4)
        self.action = _col(self.action, np.int64)
        self.person = _col(self.person, np.int64)


@dataclass
class Proposals(_Table):
    video: np.ndarray  # (N,) str
    timestamp: np.ndarray  # (N,) float64
    box: np.ndarray  # (N, 4) float32
    score: np.ndarray  # (N,) float32

    def __post_init__(self):
        self.video = _col(self.video, str)
        self.timestamp = _col(self.timestamp, np.float64)
        self.box = _col(self.box, np.float32).reshape(-1, 4)
        self.score = _col(self.score, np.float32)


@dataclass
class Objects(_Table):
    video: np.ndarray
    timestamp: np.ndarray
    box: np.ndarray  # (N, 4) float32
    class_id: np.ndarray  # (N,) int64 detector class id
    score: np.ndarray  # (N,) float32

    def __post_init__(self):
        self.video = _col(self.video, str)
        self.timestamp = _col(self.timestamp, np.float64)
        self.box = _col(self.box, np.float32).reshape(-1, 4)
        self.class_id = _col(self.class_id, np.int64)
        self.score = _col(self.score, np.float32)


@dataclass
class Predictions(_Table):
    video: np.ndarray
    timestamp: np.ndarray
    box: np.ndarray  # (N, 4) float32
    action: np.ndarray  # (N,) int64
    score: np.ndarray  # (N,) float32

    def __post_init__(self):
        self.video = _col(self.video, str)
        self.timestamp = _col(self.timestamp, np.float64)
        self.box = _col(self.box, np.float32).reshape(-1, 4)
        self.action = _col(self.action, np.int64)
        self.score = _col(self.score, np.float32)
