"""JHMDB-21 / UCF101-24 frame-AP: predictions CSV rows to per-frame detections, the per-frame
per-class NMS of the chosen protocol, then the reference's frame-AP (docs/EVALUATION.md)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from stagecache.core.errors import UserError
from stagecache.extract import ava_io
from stagecache.extract.datasets.tubes_pkl import TubeGT, timestamp_frame
from stagecache.pipelines.evaluation.tubes_ops import hard_nms_keep, iou2d, pr_to_ap, soft_nms_scores


class TubeEvalError(UserError, ValueError):
    """Predictions that do not fit the GT pickle / split; the message names the file."""


@dataclass
class FrameDets:
    """Per-frame detections, one row per (box, class), in the order the reference ranks ties in:
    video (its place in the split's test list), frame, then file order. Boxes in pixels and scores
    are float32, as the reference keeps its detections."""

    video: np.ndarray  # str
    vidx: np.ndarray  # int64, index into the split's test list
    frame: np.ndarray  # int64, 1-based
    label: np.ndarray  # int64, label index
    score: np.ndarray  # float32
    box: np.ndarray  # (N, 4) float32 pixels


def _take(det: FrameDets, idx: np.ndarray) -> FrameDets:
    return FrameDets(det.video[idx], det.vidx[idx], det.frame[idx], det.label[idx], det.score[idx], det.box[idx])


def frame_dets(gt: TubeGT, videos: list[str], pred: ava_io.Predictions, *, fps: float, source: str,
               frame_stride: int = 1) -> FrameDets:
    """Predictions CSV rows (normalised boxes, timestamps) -> pixel boxes on frame numbers."""
    vids = np.asarray(pred.video).astype(str)
    unknown = sorted(set(vids.tolist()) - set(videos))
    if unknown:
        raise TubeEvalError(f"{source}: {len(unknown)} video(s) are not test videos of this split, e.g. "
                            f"{unknown[0]!r} (wrong --split or --gt?)")
    frame = timestamp_frame(pred.timestamp, fps)
    label = np.asarray(pred.action, np.int64) - 1
    if len(label) and (label.min() < 0 or label.max() >= len(gt.labels)):
        raise TubeEvalError(f"{source}: action ids must be 1..{len(gt.labels)} (the pickle's labels), "
                            f"got {int(label.min()) + 1}..{int(label.max()) + 1}")
    n = np.array([gt.nframes[v] for v in vids], np.int64)
    bad = np.flatnonzero((frame < 1) | (frame > n))
    if bad.size:
        i = int(bad[0])
        raise TubeEvalError(f"{source}: video {vids[i]} timestamp {pred.timestamp[i]} is frame {frame[i]}, "
                            f"outside 1..{n[i]} (fps {fps}: give extraction's --fps)")
    off = np.flatnonzero((frame - 1) % frame_stride != 0)
    if off.size:
        i = int(off[0])
        raise TubeEvalError(f"{source}: video {vids[i]} timestamp {pred.timestamp[i]} is frame {frame[i]}, not a "
                            f"keyframe of --frame-stride {frame_stride} (frames 1, {1 + frame_stride}, ...)")
    pos = {v: i for i, v in enumerate(videos)}
    vidx = np.array([pos[v] for v in vids], np.int64)
    hw = np.array([gt.resolution[v] for v in vids], np.float64).reshape(-1, 2)
    scale = np.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], 1)
    # normalised boxes as float32 first: a CSV written from float32 (shortest repr) reads back to the
    # same float32, so the in-memory rows of a training run and its written CSV give one pixel box
    box = (np.asarray(pred.box, np.float32).astype(np.float64) * scale).astype(np.float32)
    score = np.asarray(pred.score, np.float64).astype(np.float32)
    order = np.lexsort((frame, vidx))  # stable: file order inside a frame
    det = FrameDets(vids, vidx, frame, label, score, box)
    missing = [v for v in videos if v not in pos or not (vidx == pos[v]).any()]
    if missing:
        warnings.warn(f"{source}: {len(missing)} of the split's {len(videos)} test videos have no prediction row "
                      f"(e.g. {missing[0]}): scored as videos without detections", stacklevel=2)
    return _take(det, order)


def frame_nms(det: FrameDets, kind: str, thr: float) -> FrameDets:
    """The per-frame, per-class NMS the reference runs before frame-AP. soft (MOC): every row kept,
    rescored, in place. hard (ACT): rows kept in pick order, a frame's classes in label order."""
    if not len(det.score):
        return det
    key = np.lexsort((det.label, det.frame, det.vidx))  # groups by (video, frame, class), file order inside
    g = np.stack([det.vidx[key], det.frame[key], det.label[key]], 1)
    starts = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]).any(1)])
    ends = np.r_[starts[1:], len(key)]
    if kind == "soft":
        score = det.score.copy()
        for a, b in zip(starts, ends):
            if b - a > 1:
                rows = key[a:b]
                score[rows] = soft_nms_scores(det.box[rows], det.score[rows], thr)
        return FrameDets(det.video, det.vidx, det.frame, det.label, score, det.box)
    kept = [key[a:b][hard_nms_keep(det.box[key[a:b]], det.score[key[a:b]], thr)] for a, b in zip(starts, ends)]
    return _take(det, np.concatenate(kept))


def frame_gt(gt: TubeGT, videos: list[str], c: int, frame_stride: int) -> dict[tuple[int, int], np.ndarray]:
    """(video index, frame) -> (n, 4) float64 GT boxes of class c, in tube order: every annotated
    frame of the keyframe grid (every annotated frame at stride 1)."""
    out: dict[tuple[int, int], list] = {}
    for iv, v in enumerate(videos):
        for label, t in gt.tubes[v]:
            if label != c:
                continue
            for row in t:
                f = int(row[0])
                if (f - 1) % frame_stride == 0:
                    out.setdefault((iv, f), []).append(row[1:5])
    return {k: np.array(b, np.float64) for k, b in out.items()}


def frame_ap(gt: TubeGT, videos: list[str], det: FrameDets, *, iou: float = 0.5, frame_stride: int = 1) -> np.ndarray:
    """(n_classes,) frame AP of detections already through `frame_nms`; NaN for a class without GT."""
    out = np.full(len(gt.labels), np.nan)
    for c in range(len(gt.labels)):
        g = frame_gt(gt, videos, c, frame_stride)
        n_gt = sum(len(b) for b in g.values())
        if not n_gt:
            continue
        sel = np.flatnonzero(det.label == c)
        order = sel[np.argsort(-det.score[sel], kind="stable")]
        is_tp = np.zeros(len(order), bool)
        for r, j in enumerate(order):
            k = (int(det.vidx[j]), int(det.frame[j]))
            cand = g.get(k)
            if cand is None:
                continue
            ious = iou2d(cand, det.box[j])
            best = int(np.argmax(ious))
            if ious[best] >= iou:
                is_tp[r] = True
                cand = np.delete(cand, best, 0)
                if cand.size:
                    g[k] = cand
                else:
                    del g[k]
        out[c] = pr_to_ap(is_tp, n_gt)
    return out
