"""Background clip decoding for `extract features`: ordered work units on a thread pool.

A unit is up to `batch_size` keyframes of one video. Worker threads decode units ahead of the
backbone (PyAV and the resize release the GIL), results come back in submission order, and at
most `prefetch` units are in flight so memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from stagecache.extract.video import VideoReadError, open_video


@dataclass
class Unit:
    video: str
    path: Path
    time_offset: float
    timestamps: np.ndarray  # (B,) seconds (annotation time)
    index: np.ndarray  # (B,) keyframe positions within the video
    last: bool  # the video's last unit


@dataclass
class UnitResult:
    unit: Unit
    clips: np.ndarray | None  # (B', T, H, W, 3) uint8 for the keyframes inside the video
    inside: np.ndarray | None  # (B,) bool: keyframe time within the video's duration
    duration: float = float("nan")
    error: str | None = None


def read_unit(unit: Unit, *, num_frames: int, rate: int, fps: float, short_side: int | None,
              square: bool) -> UnitResult:
    try:
        with open_video(unit.path, short_side=short_side, square=square, fps=fps,
                        time_offset=unit.time_offset) as r:
            vt = unit.timestamps - unit.time_offset
            inside = (vt >= 0) & (vt <= r.duration)
            clips = [r.read_clip(float(t), num_frames, rate) for t in unit.timestamps[inside]]
            h, w = r.size
            arr = np.stack(clips) if clips else np.zeros((0, num_frames, h, w, 3), np.uint8)
            return UnitResult(unit, arr, inside, r.duration)
    except VideoReadError as e:
        return UnitResult(unit, None, None, error=str(e))
    except Exception as e:  # anything else about this file must not stop the run
        return UnitResult(unit, None, None, error=f"video {unit.path}: {type(e).__name__}: {e}")


def iterate_units(units: Iterable[Unit], *, num_workers: int, prefetch: int | None = None,
                  **read_kw) -> Iterator[UnitResult]:
    """Decode units in background threads; yield results in order."""
    units = iter(units)
    if num_workers <= 0:
        for u in units:
            yield read_unit(u, **read_kw)
        return
    prefetch = prefetch or 2 * num_workers
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="decode") as pool:
        try:
            for u in units:
                pending.append(pool.submit(read_unit, u, **read_kw))
                if len(pending) >= prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
