"""The box, tube and AP arithmetic of the ACT / MOC evaluation code, in the reference's number types.

Why the number types matter: the reference keeps detections and linked tubes in float32 and
precision/recall in a float32 array, and lets numpy promote where a float32 array meets a float64
one (GT boxes: float64). Each function here does the same operations on the same types in the same
order, so its results are those of the reference bit for bit (docs/EVALUATION.md, "JHMDB-21 /
UCF101-24"); e.g. `b[:, 2] + 1` is computed in the dtype of `b` before the two boxes meet.

Score ties: the reference sorts with numpy's default `np.argsort`, whose order among equal values
is not fixed (numpy >= 1.25 dispatches it to SIMD sorts on AVX2 / AVX-512 CPUs). We take the order a
stable sort gives, keeping the reference's direction: `argsort(x)[::-1]` (the later of two equal
scores first) where it reverses an ascending sort, `argsort(-x)` (the earlier first) where it
negates.
"""
from __future__ import annotations

import numpy as np


def _area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)


def iou2d(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) boxes with one box (4,) or row-wise with (N, 4) boxes; +1 pixel convention."""
    b1 = b1.reshape(-1, 4) if b1.ndim == 1 else b1
    b2 = b2.reshape(-1, 4) if b2.ndim == 1 else b2
    w = np.maximum(0, np.minimum(b1[:, 2] + 1, b2[:, 2] + 1) - np.maximum(b1[:, 0], b2[:, 0]))
    h = np.maximum(0, np.minimum(b1[:, 3] + 1, b2[:, 3] + 1) - np.maximum(b1[:, 1], b2[:, 1]))
    ov = w * h
    return ov / (_area(b1) + _area(b2) - ov)


def _nms_iou(boxes: np.ndarray, areas: np.ndarray, i: int, rest: np.ndarray) -> np.ndarray:
    # the NMS loops' own form: (min x2 - max x1) + 1, not min(x2 + 1) - max x1 as iou2d
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
    h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
    inter = w * h
    return inter / (areas[i] + areas[rest] - inter)


def soft_nms_scores(boxes: np.ndarray, scores: np.ndarray, thr: float) -> np.ndarray:
    """MOC's per-frame NMS (its `nms2d`; K = 1 `nms_tubelets` is the same loop): nothing is removed;
    in score order, every box overlapping a kept one by IoU > thr gets weight 1 - IoU and leaves
    the loop. Returns the rescored scores in input order (float32 in, float32 out)."""
    weight = np.ones_like(scores)
    if len(scores) < 2:
        return scores * weight
    areas = _area(boxes)
    order = np.argsort(scores, kind="stable")[::-1]
    while order.size:
        i, rest = order[0], order[1:]
        iou = _nms_iou(boxes, areas, i, rest)
        hit = iou > thr
        weight[rest[hit]] = 1 - iou[hit]
        order = rest[~hit]
    return scores * weight


def hard_nms_keep(boxes: np.ndarray, scores: np.ndarray, thr: float, top_k: int | None = None) -> np.ndarray:
    """ACT's NMS (`nms2d` / `nms_tubelets`): indices kept, in the order picked (best first); a box
    whose IoU with a picked one is > thr is dropped; stops after top_k picks."""
    if not len(scores):
        return np.zeros(0, np.int64)
    areas = _area(boxes)
    order = np.argsort(scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(int(i))
        order = rest[_nms_iou(boxes, areas, i, rest) <= thr]
        if top_k is not None and len(keep) == top_k:
            break
    return np.asarray(keep, np.int64)


def link_candidates(boxes: np.ndarray, scores: np.ndarray, kind: str, thr: float, top_k: int):
    """One frame's detections of a class as the linking takes them: (boxes, scores) best first, at most top_k."""
    if kind == "soft":
        s = soft_nms_scores(boxes, scores, thr)
        order = np.argsort(s, kind="stable")[::-1][:top_k]
        return boxes[order], s[order]
    keep = hard_nms_keep(boxes, scores, thr, top_k)
    return boxes[keep], scores[keep]


def pr_to_ap(is_tp: np.ndarray, n_gt: int) -> float:
    """AP of detections in rank order: precision / recall after each one, stored in float32 from
    (p=1, r=0); trapezoids summed in float32, as the reference does."""
    tp = np.cumsum(is_tp, dtype=np.int64)
    n = np.arange(1, len(is_tp) + 1)
    pr = np.empty((len(is_tp) + 1, 2), np.float32)
    pr[0] = (1.0, 0.0)
    pr[1:, 0] = tp / n
    pr[1:, 1] = tp / n_gt
    return float(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5))


def _row(tube: np.ndarray, frame) -> int | None:
    hit = np.flatnonzero(tube[:, 0] == frame)
    return int(hit[0]) if hit.size else None


def iou3dt(b1: np.ndarray, b2: np.ndarray):
    """Spatio-temporal IoU of two tubes (rows: frame, x1, y1, x2, y2[, ...]): temporal IoU of their
    [first, last] frames times the mean per-frame IoU over the shared span.

    Python's max / min pick the first of equal values, so the scalar types (float32 tube, float64
    GT) are the reference's. A tube with a missing frame inside the shared span (the reference
    assumes none; a GT tube of a hand-made pickle may have one): that frame counts IoU 0."""
    tmin = max(b1[0, 0], b2[0, 0])
    tmax = min(b1[-1, 0], b2[-1, 0])
    if tmax < tmin:
        return 0.0
    inter = tmax - tmin + 1
    union = max(b1[-1, 0], b2[-1, 0]) - min(b1[0, 0], b2[0, 0]) + 1
    i0, i1, j0, j1 = _row(b1, tmin), _row(b1, tmax), _row(b2, tmin), _row(b2, tmax)
    if None not in (i0, i1, j0, j1) and i1 - i0 == j1 - j0 and (b1[i0:i1 + 1, 0] == b2[j0:j1 + 1, 0]).all():
        s1, s2 = b1[i0:i1 + 1, 1:5], b2[j0:j1 + 1, 1:5]
        return np.mean(iou2d(s1, s2)) * (inter / union)
    per = []
    for f in range(int(tmin), int(tmax) + 1):
        i, j = _row(b1, f), _row(b2, f)
        per.append(float(iou2d(b1[i, 1:5], b2[j, 1:5])[0]) if i is not None and j is not None else 0.0)
    return float(np.mean(per)) * float(inter / union)


def nms_tubes(tubes: list, thr: float) -> list[int]:
    """Tube NMS before video-AP (`nms3dt`): indices kept, best first; a tube whose spatio-temporal
    IoU with a kept one is > thr is dropped. `tubes`: [(tube, score)]."""
    if not tubes:
        return []
    order = np.argsort(np.array([t[1] for t in tubes]), kind="stable")
    keep = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(int(i))
        ious = np.array([iou3dt(tubes[j][0], tubes[i][0]) for j in rest])
        order = rest[ious <= thr] if rest.size else rest
    return keep
