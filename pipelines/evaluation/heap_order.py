"""Which detections the official per-keyframe heap keeps, and in which order it hands them on.

ActivityNet's `read_csv` (2019) pushes each row of a keyframe as the tuple (score, class, y1, x1, y2, x2)
into a `heapq` list while it holds fewer than `cap`; after that a row replaces the root only if its
score is strictly greater than the root's. The kept rows are then `sorted(heap, key=-score)`: a stable
sort of the heap's internal list. Ground truth goes through the same code without a cap.

The kept *set* is computed vectorised (`cap_keep`, proof in its docstring). The *order* only matters
between rows of one keyframe with the same class and the same score but different boxes (matching
and the per-class argsort see nothing else), so those keyframes alone are replayed with `heapq`
(`heap_replay`) and every other keyframe is ordered by descending score.
"""
from __future__ import annotations

import heapq

import numpy as np

from pipelines.evaluation.core import grouped_desc_order, segments


def cap_prefilter(kfd: np.ndarray, K: int, score: np.ndarray, cap: int, n_bins: int = 256) -> np.ndarray:
    """Cheap superset of the rows `cap_keep` can keep: per keyframe, the score bins reaching its top `cap`.

    Bins are a monotone function of the score, so a row in a lower bin than the one holding the
    keyframe's cap-th best score s* scores strictly below s*: it can neither be kept nor change the
    kept set (which depends only on the rows scoring >= s*). Bins: the float32 bit pattern made
    monotone, cut to 8192 coarse bins, merged to ~`n_bins` of equal mass. O(n).
    """
    f = score.astype(np.float32) + np.float32(0.0)  # monotone (ties stay ties); -0.0 -> +0.0
    bits = f.view(np.int32)
    bits = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))  # int32 order == float order
    coarse = (bits >> 19).astype(np.int64) + 4096  # (N,) in [0, 8192)
    hist = np.bincount(coarse, minlength=8192)
    lut = ((np.cumsum(hist) - hist) * n_bins) // max(score.size, 1)
    b = lut[coarse]
    nb = int(lut[-1]) + 1
    counts = np.bincount(kfd * nb + b, minlength=K * nb).reshape(K, nb)
    reach = np.cumsum(counts[:, ::-1], axis=1) >= cap
    boundary = np.where(reach.any(axis=1), nb - 1 - np.argmax(reach, axis=1), 0)
    return b >= boundary[kfd]


def cap_candidates(kfd: np.ndarray, K: int, score: np.ndarray, cap: int) -> np.ndarray:
    """Superset of the rows `cap_keep` can keep: rows scoring >= their keyframe's cap-th best score.

    Exact (one `np.partition` over a padded (K, max rows) table) when each keyframe's rows are
    contiguous and of similar counts, as in a model's output file; else `cap_prefilter`.
    """
    n = kfd.size
    if n == 0 or np.any(kfd[1:] < kfd[:-1]):
        return cap_prefilter(kfd, K, score, cap)
    sizes = np.bincount(kfd, minlength=K)
    width = int(sizes.max())
    if width <= cap:
        return np.ones(n, dtype=bool)
    if K * width > 3 * n:
        return cap_prefilter(kfd, K, score, cap)
    if K * width == n:  # every keyframe has the same number of rows: the table is a reshape
        table = (-score).reshape(K, width)  # a fresh array: partitioned in place
        table.partition(cap - 1, axis=1)
        s_star = -table[:, cap - 1]  # (K,) cap-th best
        return (score.reshape(K, width) >= s_star[:, None]).ravel()
    starts = np.cumsum(sizes) - sizes
    table = np.full((K, width), np.inf)  # negated scores; padding sorts last
    table[kfd, np.arange(n) - starts[kfd]] = -score
    s_star = -np.partition(table, cap - 1, axis=1)[:, cap - 1]  # (K,) cap-th best (-inf padding: <= it)
    return score >= s_star[kfd]


def cap_keep(kfd: np.ndarray, cls: np.ndarray, box: np.ndarray, score: np.ndarray, cap: int,
             order: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the rows (file order inside each keyframe) that the bounded heap keeps.

    For a keyframe with more than `cap` rows let s* be its cap-th largest score and m < cap the number
    of rows scoring above s*. (1) Every row scoring above s* is kept: a heap that could refuse or evict
    it would hold `cap` rows scoring above s*. (2) The heap root's tuple only grows once the heap is
    full, so s*-rows enter until the first `cap` rows (file order) scoring >= s* have been seen; then
    the root scores s* and no s*-row enters again. (3) Each later row above s* evicts the smallest
    tuple among the s*-rows held. Hence the kept s*-rows are the cap - m largest tuples (class, y1, x1,
    y2, x2) among the s*-rows that are among the first `cap` rows scoring >= s*.
    """
    n = kfd.size
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep
    # per keyframe by descending score (`order`: the caller's `grouped_desc_order(kfd, score)`)
    o = grouped_desc_order(kfd, score) if order is None else order
    starts, seg = segments(kfd[o])
    counts = np.diff(starts)
    over_kf = counts > cap
    if not over_kf.any():
        return keep
    sstar_kf = np.full(counts.size, -np.inf)
    sstar_kf[over_kf] = score[o][starts[:-1][over_kf] + cap - 1]
    seg_of = np.empty(n, np.int64)
    seg_of[o] = seg
    over = over_kf[seg_of]
    s_star = sstar_kf[seg_of]
    above = over & (score > s_star)
    keep[over] = False
    keep[above] = True
    # s*-candidates: among the first `cap` rows (file order) of the keyframe scoring >= s*
    # file order within keyframe (already so when the keyframes' rows are contiguous)
    oi = np.arange(n) if not np.any(seg_of[1:] < seg_of[:-1]) else np.argsort(seg_of, kind="stable")
    ge = (over & (score >= s_star))[oi].astype(np.int64)
    cum = np.cumsum(ge)
    st_i, seg_i = segments(seg_of[oi])
    pos = cum - np.concatenate([[0], cum])[st_i[:-1]][seg_i]
    cand = np.zeros(n, dtype=bool)
    cand[oi] = (ge > 0) & (pos <= cap)
    cand &= over & (score == s_star)
    m_kf = np.bincount(seg_of[above], minlength=counts.size)
    c = np.flatnonzero(cand)
    if c.size:
        oc = np.lexsort((box[c, 2], box[c, 3], box[c, 0], box[c, 1], cls[c], seg_of[c]))  # tuple order
        cs = c[oc]
        st_c, seg_c = segments(seg_of[cs])
        rank_from_end = (st_c[1:][seg_c] - 1) - np.arange(cs.size)
        keep[cs[rank_from_end < cap - m_kf[seg_of[cs]]]] = True
    return keep


def heap_replay(score, cls, box, cap: int) -> list[int]:
    """Row indices (into the given file-order rows of one keyframe) in the official output order."""
    tuples = [(s, c, b[1], b[0], b[3], b[2]) for s, c, b in zip(score.tolist(), cls.tolist(), box.tolist())]
    heap: list = []
    for t in tuples:
        if cap < 1 or len(heap) < cap:
            heapq.heappush(heap, t)
        elif t[0] > heap[0][0]:
            heapq.heapreplace(heap, t)
    rows: dict = {}
    for i, t in enumerate(tuples):  # equal tuples are interchangeable rows
        rows.setdefault(t, []).append(i)
    return [rows[t].pop() for t in sorted(heap, key=lambda t: -t[0])]


def ambiguous_groups(grp: np.ndarray, cls: np.ndarray, box: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Groups (keyframes) holding two rows of one class with equal score and different boxes.

    Sorting by (group, class, score) only is enough: a run of equal keys holding two different boxes
    has two different boxes next to each other in any order.
    """
    if grp.size < 2:
        return np.zeros(0, np.int64)
    o = np.lexsort((score, grp * (int(cls.max()) - int(cls.min()) + 1) + (cls - cls.min())))
    g, c, s, b = grp[o], cls[o], score[o], box[o]
    same = (g[1:] == g[:-1]) & (c[1:] == c[:-1]) & (s[1:] == s[:-1]) & np.any(b[1:] != b[:-1], axis=1)
    return np.unique(g[1:][same])


def official_order(grp: np.ndarray, cls: np.ndarray, box: np.ndarray, score: np.ndarray, cap: int,
                   kept: np.ndarray | None, kept_sorted: np.ndarray | None = None) -> np.ndarray:
    """Indices of the kept rows, grouped by `grp` (ascending) in the heap's output order within.

    `grp`, `cls`, `box`, `score`: every row (file order) of the evaluated keyframes; `kept`: `cap_keep`
    (unused when `kept_sorted`, the kept rows' indices already in `np.lexsort((-score, grp))` order, is given).
    """
    if kept_sorted is None:
        k = np.flatnonzero(kept)
        kept_sorted = k[grouped_desc_order(grp[k], score[k])]
    out = kept_sorted
    # only rows in a run of equal (keyframe, score) can be ambiguous: check those few
    g, sc = grp[out], score[out]
    tie = (g[1:] == g[:-1]) & (sc[1:] == sc[:-1])
    if not tie.any():
        return out
    sub = out[np.concatenate([tie, [False]]) | np.concatenate([[False], tie])]
    amb = ambiguous_groups(grp[sub], cls[sub], box[sub], score[sub])
    if amb.size == 0:
        return out
    is_amb = np.zeros(int(grp.max()) + 1, dtype=bool)
    is_amb[amb] = True
    out = out[~is_amb[grp[out]]]
    rows = np.flatnonzero(is_amb[grp])  # every row of those keyframes, file order
    rows = rows[np.argsort(grp[rows], kind="stable")]
    st, _ = segments(grp[rows])
    parts = [out]
    for a, b in zip(st[:-1].tolist(), st[1:].tolist()):
        r = rows[a:b]
        parts.append(r[heap_replay(score[r], cls[r], box[r], cap)])
    res = np.concatenate(parts)
    return res[np.argsort(grp[res], kind="stable")]
