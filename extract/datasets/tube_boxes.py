"""Box sources of JHMDB-21 / UCF101-24 besides the GT rows: jittered GT copies and detector keyframes.

Jittered GT copies (`extract features --gt-jitter F`, default 0 = off): for every GT box of a
keyframe, `copies` proposal rows (detections: `actor_is_gt` false, score 1.0, track -1), each
coordinate moved by F times the box's own width (x1, x2) or height (y1, y2), times a uniform draw
in [-1, 1]. F < 0.5 keeps x1 <= x2 and y1 <= y2 before the clip to [0, 1] (a side moves by less than
half the box), so no box is ever inverted. The draw depends only on (seed, video, frame, track), so
a killed and resumed extraction, a shard, or a run over other videos gives identical rows. Their
labels come from the usual label transfer (`--label-iou`): with F = 0.1 a copy overlaps its box at
IoU >= 0.64 (the worst case: every side moved 10% inwards), so `--label-iou 0.5` gives every copy
the labels of its best-overlapping GT box (its own unless two GT boxes nearly coincide), while at
the default 0.9 about 94% of them stay unlabelled background (measured on 20000 draws).

Detector keyframes (`extract detections --dataset jhmdb|ucf24`): the (video, timestamp) keyframes
that `extract features --dataset` stores for the same split, side and stride, so the proposals CSV
the detector writes matches the stores' keys exactly.
"""
from __future__ import annotations

import zlib

import numpy as np

from stagecache.extract import ava_io
from stagecache.extract.datasets.tubes_pkl import TubeGT, frame_timestamp

MAX_JITTER = 0.5  # exclusive: a side moved by half the box or more could cross the opposite side


def _tube_keyframes(t: np.ndarray, frame_stride: int) -> np.ndarray:
    """The rows (n, 5) of a tube at keyframes (same rule as `tubes_pkl.to_annotations`)."""
    return t[(t[:, 0].astype(np.int64) - 1) % frame_stride == 0]


def _draw(seed: int, video: str, frame: int, track: int, copies: int) -> np.ndarray:
    """(copies, 4) uniform [-1, 1) draws of one (video, frame, tube), independent of everything else."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(video.encode("utf-8")), frame, track])
    return rng.uniform(-1.0, 1.0, (copies, 4))


def jitter_boxes(box: np.ndarray, u: np.ndarray, jitter: float) -> np.ndarray:
    """Normalised box (4,) and draws (C, 4) in [-1, 1] -> (C, 4) jittered boxes in [0, 1], never inverted."""
    x1, y1, x2, y2 = (float(c) for c in box)
    w, h = x2 - x1, y2 - y1
    out = np.array([x1, y1, x2, y2]) + jitter * u * np.array([w, h, w, h])  # (C, 4)
    # rounding can leave a zero-width side a hair inverted; sort each pair, then clip (keeps the order)
    lo_x, hi_x = np.minimum(out[:, 0], out[:, 2]), np.maximum(out[:, 0], out[:, 2])
    lo_y, hi_y = np.minimum(out[:, 1], out[:, 3]), np.maximum(out[:, 1], out[:, 3])
    return np.clip(np.stack([lo_x, lo_y, hi_x, hi_y], 1), 0.0, 1.0)


def jittered_gt_proposals(gt: TubeGT, videos: list[str], *, fps: float, jitter: float, copies: int = 1,
                          seed: int = 0, frame_stride: int = 1) -> ava_io.Proposals:
    """`copies` jittered copies of every GT box of `videos` at the keyframes, as proposals (score 1.0)."""
    if not 0.0 <= jitter < MAX_JITTER:
        raise ValueError(f"gt_jitter must be in [0, {MAX_JITTER}), got {jitter}")
    if copies < 1:
        raise ValueError(f"gt_jitter_copies must be >= 1, got {copies}")
    vid, ts, boxes = [], [], []
    for v in videos:
        h, w = gt.resolution[v]
        scale = np.array([w, h, w, h], np.float64)
        for track, (_, t) in enumerate(gt.tubes[v]):
            for row in _tube_keyframes(t, frame_stride):
                f = int(row[0])
                box = np.clip(row[1:5] / scale, 0.0, 1.0)  # the GT row's own box (to_annotations)
                boxes.append(jitter_boxes(box, _draw(seed, v, f, track, copies), jitter))
                vid += [v] * copies
                ts.append(np.full(copies, frame_timestamp(f, fps)))
    if not boxes:
        return ava_io.Proposals(np.zeros(0, str), np.zeros(0), np.zeros((0, 4)), np.zeros(0))
    return ava_io.Proposals(np.array(vid, dtype=str), np.concatenate(ts), np.concatenate(boxes).astype(np.float32),
                            np.ones(len(vid), np.float32))


def concat_proposals(first: ava_io.Proposals | None, second: ava_io.Proposals) -> ava_io.Proposals:
    """The rows of `first` (may be None), then those of `second`."""
    if first is None:
        return second
    return ava_io.Proposals(*(np.concatenate([getattr(first, c), getattr(second, c)])
                              for c in ("video", "timestamp", "box", "score")))


def keyframe_times(gt: TubeGT, videos: list[str], *, fps: float, frame_stride: int = 1) -> dict[str, np.ndarray]:
    """video -> sorted unique keyframe timestamps (frames with a GT box on the stride) of `videos`."""
    out = {}
    for v in videos:
        frames = [_tube_keyframes(t, frame_stride)[:, 0] for _, t in gt.tubes[v]]
        frames = np.unique(np.concatenate(frames)) if frames else np.zeros(0)
        if len(frames):
            out[v] = frame_timestamp(frames, fps)
    return out
