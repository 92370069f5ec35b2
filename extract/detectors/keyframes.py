"""Detectors over the keyframes of a video: the one loop of `extract features` (its per-video steps),
`extract detections` (`job.py`) and `predict-video`.

A keyframe's image is the frame of its own timestamp on the video's frame grid (a 2-frame clip at
rate 1 ends on it, see extract/video.py); detectors take (B, 3, H, W) float images in [0, 1] and
the (video, timestamp) keys of the batch (precomputed detectors look rows up by key, the others
ignore it).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["read_keyframes", "frames_to_tensor", "run_detectors", "detect_keyframes"]


def read_keyframes(reader, times) -> np.ndarray:
    """(B,) keyframe timestamps -> (B, H, W, 3) uint8 frames from an `extract.video.open_video` reader."""
    return np.stack([reader.read_clip(float(t), 2, 1)[-1] for t in times])


def frames_to_tensor(frames: np.ndarray, device=None) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1], on `device` (default: where it is)."""
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 255.0


def run_detectors(detectors: Sequence, frames: Tensor | None, keys: list[tuple[str, float]]) -> list:
    """One output list per detector (None for a detector that is None), all on the same images."""
    with torch.no_grad():
        return [None if d is None else d(frames, keys=keys) for d in detectors]


def detect_keyframes(detectors: Sequence, reader, video: str, times, *,
                     batch_size: int) -> Iterator[tuple[int, list]]:
    """Yield (index of the batch's first keyframe, `run_detectors` outputs) over `times` in batches.

    `reader=None` passes no images (detectors that read files); a decoding error names the video.
    """
    from stagecache.extract.video import VideoReadError

    for s in range(0, len(times), batch_size):
        ts = times[s: s + batch_size]
        frames = None
        if reader is not None:
            try:
                frames = frames_to_tensor(read_keyframes(reader, ts))
            except VideoReadError as e:
                raise VideoReadError(f"video {video}: {e}") from e
        yield s, run_detectors(detectors, frames, [(video, float(t)) for t in ts])
