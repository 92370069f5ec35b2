"""Compiled (numba) loops of the AVA evaluators: the official per-keyframe heap, and box matching.

Both follow the reference code step for step, with the same floating-point operations in the same
order (numba compiles without fast-math: IEEE results, no reassociation or fused multiply-add), so
the numbers agree with the Python code to the last bit:

- `heap_chunk`: ActivityNet's `read_csv` (2019) per keyframe pushes the tuple (score, class, y1, x1,
  y2, x2) into a `heapq` list while it holds fewer than `cap` (all of them when `cap` < 1); after that a
  row replaces the root only if its score is strictly greater than the root's score. The kept tuples
  are then `sorted(heap, key=-score)`: a stable sort of the heap's internal list. The sift loops are
  CPython's `heapq` ones (`_siftdown`, `_siftup`), which the C module implements the same way, and
  tuples compare as Python compares them.
- `match_groups`: TF object-detection's `per_image_evaluation` loop: each detection, in matching
  order, takes the GT box of its group with the highest IoU (`np.argmax`: the first on ties, the first
  NaN if any); a TP when that IoU >= thr and no earlier detection took that box. IoU as
  `np_box_ops.iou`, in the dtype of the boxes (float32 boxes give float64 intersections and unions,
  as numpy's promotion against the float64 zeros there does).
"""
from __future__ import annotations

import numpy as np
from numba import njit

# heap state: one int64 array carried from chunk to chunk
_RUN, _LEN, _OUT = 0, 1, 2  # the current keyframe, the heap's length, rows written


@njit(cache=True)
def _less(h, i, j):
    """Python's tuple `<` of heap entries i and j: (score, class, y1, x1, y2, x2), first difference decides."""
    for k in range(6):
        a, b = h[i, k], h[j, k]
        if a < b:
            return True
        if a > b:
            return False
    return False


@njit(cache=True)
def _copy_row(h, dst, src):
    for k in range(6):
        h[dst, k] = h[src, k]


@njit(cache=True)
def _siftdown(h, start, pos, tmp):
    # heapq._siftdown: move the entry at pos up while it is smaller than its parent
    _copy_row(h, tmp, pos)
    while pos > start:
        parent = (pos - 1) >> 1
        if _less(h, tmp, parent):
            _copy_row(h, pos, parent)
            pos = parent
            continue
        break
    _copy_row(h, pos, tmp)


@njit(cache=True)
def _siftup(h, pos, end, tmp):
    # heapq._siftup: bubble the smaller child up to the leaf, then _siftdown the new entry into place
    start = pos
    _copy_row(h, tmp + 1, pos)
    child = 2 * pos + 1
    while child < end:
        right = child + 1
        if right < end and not _less(h, child, right):
            child = right
        _copy_row(h, pos, child)
        pos = child
        child = 2 * pos + 1
    _copy_row(h, pos, tmp + 1)
    _siftdown(h, start, pos, tmp)


@njit(cache=True)
def _flush(h, n, run, out_run, out_val, o):
    """Append the heap's n entries in `sorted(heap, key=-score)` order (stable) to the outputs at o."""
    order = np.argsort(-h[:n, 0], kind="mergesort")
    for r in range(n):
        i = order[r]
        out_run[o] = run
        for k in range(6):
            out_val[o, k] = h[i, k]
        o += 1
    return o


@njit(cache=True)
def heap_chunk(offset, starts, cls, score, x1, y1, x2, y2, slot_lut, lo, keep_run, cap, h, state, out_run, out_val,
               final):
    """Feed one chunk of rows (file rows offset.., in file order) through the per-keyframe heaps.

    `starts`: (R + 1,) first row of each keyframe (its rows contiguous); `slot_lut[id - lo + 1]`: the
    class slot of a label id (C, one past the last slot, for ids outside the label map: dropped, as
    are ids outside the table); `keep_run[r]`: keyframe r not excluded. `h`: (hcap + 2, 6) heap
    storage (two scratch rows); `state` carries the current keyframe and heap length to the next
    chunk; `final` flushes the last heap. Appends (keyframe, (score, class slot, y1, x1, y2, x2)) in
    the official order to the outputs.
    """
    o = state[_OUT]
    tmp = h.shape[0] - 2
    n_slots = slot_lut.shape[0]
    dropped = slot_lut[0]  # slot 0 of the table is "below the range": C
    run, n = state[_RUN], state[_LEN]
    for i in range(cls.shape[0]):
        row = offset + i
        while row >= starts[run + 1]:  # a new keyframe: hand the previous one's heap on
            if n:
                o = _flush(h, n, run, out_run, out_val, o)
            run, n = run + 1, 0
        s = score[i]
        full = cap >= 1 and n >= cap
        if full and not s > h[0, 0]:  # the usual case once a heap is full: refused on the score alone
            continue
        j = np.int64(cls[i]) - lo + 1
        c = slot_lut[j] if 0 <= j < n_slots else dropped
        if c == dropped or not keep_run[run]:
            continue
        if not full:
            h[n, 0], h[n, 1], h[n, 2], h[n, 3], h[n, 4], h[n, 5] = s, c, y1[i], x1[i], y2[i], x2[i]
            n += 1
            _siftdown(h, 0, n - 1, tmp)
        elif s > h[0, 0]:
            h[0, 0], h[0, 1], h[0, 2], h[0, 3], h[0, 4], h[0, 5] = s, c, y1[i], x1[i], y2[i], x2[i]
            _siftup(h, 0, n, tmp)
    if final and n:
        o = _flush(h, n, run, out_run, out_val, o)
        n = 0
    state[_RUN], state[_LEN], state[_OUT] = run, n, o


@njit(cache=True, error_model="numpy")  # x / 0 -> inf / NaN as in numpy, not ZeroDivisionError
def match_groups(d_grp, d_box, g_start, g_box, thr):
    """TP flags of detections (matching order within each group); `d_grp[i]` < 0: no GT group.

    Boxes x1, y1, x2, y2 (float64, or float32 for MMAction2's arrays); GT of group k are rows
    g_start[k]:g_start[k + 1] of `g_box`.
    """
    nd = d_grp.shape[0]
    tp = np.zeros(nd, dtype=np.bool_)
    taken = np.zeros(g_box.shape[0], dtype=np.bool_)
    for i in range(nd):
        k = d_grp[i]
        if k < 0:
            continue
        a, b = g_start[k], g_start[k + 1]
        best, best_v, nan = -1, 0.0, False
        dx1, dy1, dx2, dy2 = d_box[i, 0], d_box[i, 1], d_box[i, 2], d_box[i, 3]
        area_d = (dy2 - dy1) * (dx2 - dx1)
        for j in range(a, b):
            gx1, gy1, gx2, gy2 = g_box[j, 0], g_box[j, 1], g_box[j, 2], g_box[j, 3]
            ih = (dy2 if dy2 < gy2 else gy2) - (dy1 if dy1 > gy1 else gy1)
            iw = (dx2 if dx2 < gx2 else gx2) - (dx1 if dx1 > gx1 else gx1)
            ih = ih if ih > 0.0 else 0.0  # np.maximum(zeros (float64), .)
            iw = iw if iw > 0.0 else 0.0
            inter = ih * iw
            area_g = (gy2 - gy1) * (gx2 - gx1)
            v = inter / (area_d + area_g - inter)
            if v != v:  # np.argmax returns the first NaN
                best, nan = j, True
                break
            if best < 0 or v > best_v:
                best, best_v = j, v
        if best >= 0 and not nan and best_v >= thr and not taken[best]:
            tp[i] = True
            taken[best] = True
    return tp
