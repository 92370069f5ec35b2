"""MultiSports' evaluator (MCG-NJU/MultiSports `evaluate_multisports.py`): frame-AP and video-AP
with PASCAL VOC boxes (no +1 pixel) and the VOC area under the precision/recall curve.

How it differs from the ACT / MOC code of `tubes_ops` (docs/EVALUATION.md, "MultiSports"):
- IoU: areas (x2 - x1) * (y2 - y1), no +1; temporal IoU (last - first) of the shared span over
  (last - first) of the union, no +1 either.
- matching: a detection takes the GT box (tube) of highest IoU among all of its frame's (video's),
  matched ones included: if that one is already taken, the detection is a false positive (ACT
  removes matched GT and looks among the rest).
- AP: precision / recall in float64, recall padded with 0 and 1, precision with 0 and 0, made
  non-increasing from the right, summed over the recall steps (VOC), not ACT's float32 trapezoids.
- classes: `extract.datasets.multisports.NOT_EVALUATED` are skipped; a class without GT in the test
  videos is left out of the mean (NaN here).

Number types are the reference's: detections float64 (their values from the float32 boxes and
scores the predictions CSV gives, `tubes_frame.frame_dets`), GT boxes float64 for frame-AP (it
lists them), GT tubes in the pickle's own type for video-AP, linked tubes float32. Score ties: the
reference's `np.argsort(-scores)` order is not fixed among equal values (SIMD sorts); the order a
stable sort of the negated scores gives is taken (the earlier row first), as `tubes_ops` does.
"""
from __future__ import annotations

import numpy as np


def area_voc(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def overlap_voc(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Intersection areas of (N, 4) boxes with one box (1, 4) or row-wise with (N, 4) boxes."""
    w = np.maximum(0, np.minimum(b1[:, 2], b2[:, 2]) - np.maximum(b1[:, 0], b2[:, 0]))
    h = np.maximum(0, np.minimum(b1[:, 3], b2[:, 3]) - np.maximum(b1[:, 1], b2[:, 1]))
    return w * h


def iou_voc(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) boxes b1 with one box b2 (4,) or (1, 4)."""
    b1 = b1[None, :] if b1.ndim == 1 else b1
    b2 = b2[None, :] if b2.ndim == 1 else b2
    ov = overlap_voc(b1, b2)
    return ov / (area_voc(b1) + area_voc(b2) - ov)


class TubeGapError(ValueError):
    """Two tubes whose frames in their shared span differ (the reference asserts they do not)."""


def _span(t: np.ndarray, first, last) -> np.ndarray | None:
    i, j = np.flatnonzero(t[:, 0] == first), np.flatnonzero(t[:, 0] == last)
    return t[i[0]:j[0] + 1] if len(i) == 1 and len(j) == 1 else None


def iou3dt_voc(b1: np.ndarray, b2: np.ndarray):
    """Spatio-temporal IoU of two tubes (rows frame, x1, y1, x2, y2[, ...]): the mean VOC IoU over
    the shared frames times the temporal IoU. The scalars keep the reference's types: Python's
    max / min return the first of equal values, so which tube's frame number (float32 tube, GT of
    the pickle's type) enters each difference is the reference's."""
    tmin = max(b1[0, 0], b2[0, 0])
    tmax = min(b1[-1, 0], b2[-1, 0])
    if tmax < tmin:
        return 0.0
    inter = tmax - tmin
    union = max(b1[-1, 0], b2[-1, 0]) - min(b1[0, 0], b2[0, 0])
    s1, s2 = _span(b1, tmin, tmax), _span(b2, tmin, tmax)
    if s1 is None or s2 is None or len(s1) != len(s2) or (s1[:, 0] != s2[:, 0]).any():
        raise TubeGapError(f"frames {tmin:g}..{tmax:g}")
    ov = overlap_voc(s1[:, 1:5], s2[:, 1:5])
    spatial = np.mean(ov / (area_voc(s1[:, 1:5]) + area_voc(s2[:, 1:5]) - ov))
    with np.errstate(invalid="ignore", divide="ignore"):  # one shared frame of two one-frame tubes: 0 / 0
        return spatial * (inter / union)


def voc_ap(is_tp: np.ndarray, n_gt: int) -> float:
    """VOC AP of detections in rank order (is_tp (N,) bool) against n_gt GT instances."""
    tp = np.cumsum(is_tp, dtype=np.int64)
    precision = np.concatenate([[0.0], tp / np.arange(1, len(is_tp) + 1), [0.0]])
    recall = np.concatenate([[0.0], tp / float(n_gt), [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    step = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[step] - recall[step - 1]) * precision[step]))


def rank(scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing score, ties in input order."""
    return np.argsort(-np.asarray(scores), kind="stable")


def frame_ap_class(gt: dict[tuple[int, int], np.ndarray], n_gt: int, key: np.ndarray, score: np.ndarray,
                   box: np.ndarray, thr: float) -> float:
    """AP of one class: gt (video index, frame) -> (n, 4) float64; the class's detections as key
    (N, 2) (video index, frame), score (N,) float64, box (N, 4) float64, in file order."""
    taken = {k: np.zeros(len(g), bool) for k, g in gt.items()}
    order = rank(score)
    is_tp = np.zeros(len(order), bool)
    for r, j in enumerate(order):
        k = (int(key[j, 0]), int(key[j, 1]))
        g = gt.get(k)
        if g is None:
            continue
        ious = iou_voc(g, box[j])
        best = int(np.argmax(ious))
        if ious[best] >= thr and not taken[k][best]:
            taken[k][best] = is_tp[r] = True
    return voc_ap(is_tp, n_gt)


def video_ap_class(gt: dict[str, list[np.ndarray]], dets: list[tuple[str, float, np.ndarray]], thr: float,
                   ) -> float:
    """AP of one class: gt video -> its GT tubes of the class (non-empty lists); dets [(video, score,
    tube (L, 6) float32)] in the linking's order."""
    n_gt = sum(len(g) for g in gt.values())
    taken = {v: np.zeros(len(g), bool) for v, g in gt.items()}
    order = rank(np.array([d[1] for d in dets], np.float64))
    is_tp = np.zeros(len(order), bool)
    for r, j in enumerate(order):
        v, _, tube = dets[j]
        g = gt.get(v)
        if g is None:
            continue
        ious = []
        for i, t in enumerate(g):
            try:
                ious.append(iou3dt_voc(t, tube))
            except TubeGapError as e:
                raise TubeGapError(f"video {v}: GT tube {i} and a detected tube do not share every frame of {e} "
                                   "(MultiSports' evaluator needs tubes without gaps)") from None
        best = int(np.argmax(ious))
        if ious[best] >= thr and not taken[v][best]:
            taken[v][best] = is_tp[r] = True
    return voc_ap(is_tp, n_gt)
