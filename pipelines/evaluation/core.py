"""Protocol-independent pieces of the AVA frame-mAP: keyframe ids, box matching, VOC AP.

Every function here reproduces one step of the TF object-detection evaluation code that the
ActivityNet, PySlowFast and MMAction2 evaluators share (`np_box_ops.iou`, the per-detection argmax loop
of `per_image_evaluation`, `metrics.compute_precision_recall` / `compute_average_precision`) with the
same floating-point operations in the same order, so results agree to the last bit.
"""
from __future__ import annotations

import numpy as np


def segments(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets (n_seg+1,) and segment id per row of an already sorted key array."""
    if sorted_keys.size == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    brk = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate([[0], brk, [sorted_keys.size]]).astype(np.int64)
    return starts, np.repeat(np.arange(starts.size - 1), np.diff(starts))


def grouped_desc_order(grp: np.ndarray, score: np.ndarray) -> np.ndarray:
    """`np.lexsort((-score, grp))`: indices by ascending `grp`, descending score, input order on ties.

    When `grp` is already non-decreasing (rows of a keyframe contiguous, as in a model's output
    file) each group is sorted on its own: one stable `argsort` along the rows of a padded
    (n_groups, largest group) table of small rows instead of two global sorts. Same indices.
    """
    n = grp.size
    if n < 2 or np.any(grp[1:] < grp[:-1]):
        return np.lexsort((-score, grp))
    starts, seg = segments(grp)
    sizes = np.diff(starts)
    K, width = sizes.size, int(sizes.max())
    if K * width > 2 * n + 1024:  # a few huge groups among small ones: the padding would dominate
        return np.lexsort((-score, grp))
    uniform = bool(np.all(sizes == width))
    if uniform:
        table = (-score).reshape(K, width)
    else:
        table = np.full((K, width), np.inf)  # padding after each group's rows: sorts last (stable)
        table[seg, np.arange(n) - starts[seg]] = -score
    o = np.argsort(table, axis=1, kind="stable")  # (K, width) positions within each group
    o += starts[:-1, None]
    return o.ravel() if uniform else o[o < starts[1:, None]]


def class_index(values: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """`np.searchsorted(class_ids, values)` for values that are all in the sorted `class_ids`."""
    values = np.asarray(values)
    if values.size == 0 or class_ids.size == 0:
        return np.zeros(values.shape, np.int64)
    lo, hi = int(class_ids.min()), int(class_ids.max())
    if hi - lo > 1 << 20:
        return np.searchsorted(class_ids, values)
    lut = np.zeros(hi - lo + 1, np.int64)
    lut[class_ids - lo] = np.arange(class_ids.size)
    return lut[values - lo]


def first_appearance_ids(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ids 0..K-1 numbered in order of first appearance (the evaluators' dict insertion order).

    O(n) when equal keys are contiguous (a model's output file), else one `np.unique`.
    """
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.zeros(0, np.int64), 0
    starts = np.concatenate([[0], np.flatnonzero(keys[1:] != keys[:-1]) + 1])
    run_vals = keys[starts]
    if np.unique(run_vals).size == run_vals.size:
        # `np.repeat` of run ids: ~20x faster than a cumsum over the (N,) bool change mask
        return np.repeat(np.arange(starts.size), np.diff(np.append(starts, keys.size))), int(run_vals.size)
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inv.ravel()], int(first.size)


def member(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`np.isin` for integer arrays; a lookup table when the ids span a small range (class ids)."""
    values, ids = np.asarray(values), np.asarray(ids)
    if ids.size == 0 or values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo > 1 << 20:
        return np.isin(values, ids)
    lut = np.zeros(hi - lo + 3, dtype=bool)  # first and last slots: out of range
    lut[ids - lo + 1] = True
    return np.take(lut, values - (lo - 1), mode="clip")  # indices clipped onto those two slots


def match(d_group: np.ndarray, d_box: np.ndarray, g_group: np.ndarray, g_box: np.ndarray,
          thr: float) -> np.ndarray:
    """TP flags of detections; GT sorted by group ((keyframe, class)); detections in any group order,
    but in matching order inside each group (a group key absent from `g_group`, e.g. -1: no GT).

    Each detection takes the GT box of its group with the highest IoU (`np.argmax`: the first on ties,
    the first NaN if any); it is a TP when that IoU >= thr and no earlier detection of the group took
    that box. A detection never falls back to its second-best box. Boxes x1, y1, x2, y2 in the dtype
    the evaluator computes in (`kernels.match_groups`).
    """
    from stagecache.pipelines.evaluation.kernels import match_groups  # numba compiles on first use (then cached)

    nd = d_group.size
    if nd == 0 or g_group.size == 0:
        return np.zeros(nd, dtype=bool)
    u, first = np.unique(g_group, return_index=True)  # sorted groups and their first GT row
    g_start = np.append(first, g_group.size).astype(np.int64)
    pos = np.minimum(np.searchsorted(u, d_group), u.size - 1)
    d_slot = np.where(u[pos] == d_group, pos, -1).astype(np.int64)  # (nd,) group slot; -1: no GT
    return match_groups(d_slot, np.ascontiguousarray(d_box), g_start, np.ascontiguousarray(g_box), float(thr))


def voc_ap(scores: np.ndarray, tp: np.ndarray, num_gt: int):
    """(AP, precision, recall) exactly as `compute_precision_recall` + `compute_average_precision`.

    Same calls on the same arrays: `np.argsort(scores)[::-1]` (numpy's default sort: ties come out in
    that call's order), integer cumulative sums, the all-point interpolation and one `np.sum`.
    """
    if num_gt == 0:
        return float("nan"), None, None
    order = np.argsort(scores)[::-1]
    tpl = tp.astype(int)[order]
    ctp = np.cumsum(tpl)
    cfp = np.cumsum(1 - tpl)
    precision = ctp.astype(float) / (ctp + cfp)
    recall = ctp.astype(float) / num_gt
    if precision.size == 0:
        return 0.0, precision, recall
    r = np.concatenate([[0], recall, [1]])
    p = np.concatenate([[0], precision, [0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # == the reference's backward max loop
    i = np.where(r[1:] != r[:-1])[0] + 1
    return float(np.sum((r[i] - r[i - 1]) * p[i])), precision, recall


def per_class_ap(cls: np.ndarray, scores: np.ndarray, tp: np.ndarray, num_gt: np.ndarray, keep_curves: bool):
    """Per class index c in 0..C-1 (rows of `cls` in concatenation order): AP list and curves."""
    C = num_gt.size
    # keeps the concatenation order inside each class; 16-bit keys: numpy's stable sort is a radix sort
    o = np.argsort(cls.astype(np.int16) if C < 1 << 15 else cls, kind="stable")
    starts = np.searchsorted(cls[o], np.arange(C + 1))
    aps, curves = np.full(C, np.nan), {}
    for c in range(C):
        sl = o[starts[c]:starts[c + 1]]
        ap, p, r = voc_ap(scores[sl], tp[sl], int(num_gt[c]))
        aps[c] = ap
        if keep_curves and p is not None:
            curves[c] = (p, r)
    return aps, np.diff(starts), curves
