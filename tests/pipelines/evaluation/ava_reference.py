"""Slow second implementations of the three AVA protocols, following each codebase's own structure.

Written for the tests from reading the code (not copied): ActivityNet `get_ava_performance.py` (2019)
+ `ava/per_image_evaluation.py`, `object_detection_evaluation.py`, `metrics.py`; PySlowFast
`ava_eval_helper.py`; MMAction2 `ava_utils.py`. Dicts keyed per keyframe in insertion order, Python
heaps, a per-detection argmax loop, one `np.argsort(scores)[::-1]` per class, VOC AP with its loop.

Rows: GT `(kf, x1, y1, x2, y2, cls, extra)` (extra = the 8th column, None if absent), detections
`(kf, x1, y1, x2, y2, cls, score)`, both in file order; `kf` any hashable keyframe key.
"""
from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np


def _read(rows, whitelist, capacity, mode):
    """Per-keyframe (boxes y1x1y2x2, labels, scores) as each reader builds them."""
    entries = defaultdict(list)
    for kf, x1, y1, x2, y2, c, sc in rows:
        if c not in whitelist:
            continue
        score = 1.0 if sc is None else float(sc)
        item = (score, c, y1, x1, y2, x2)
        h = entries[kf]
        if mode == "heap":
            if capacity < 1 or len(h) < capacity:
                heapq.heappush(h, item)
            elif score > h[0][0]:
                heapq.heapreplace(h, item)
        else:
            h.append(item)
    out = {}
    for kf, h in entries.items():
        if mode != "file":
            h = sorted(h, key=lambda t: -t[0])
        out[kf] = ([[t[2], t[3], t[4], t[5]] for t in h], [t[1] for t in h], [t[0] for t in h])
    return out


def _iou(a, b):
    """(N, 4) x (M, 4) y1x1y2x2 -> (N, M), broadcasting as np_box_ops does."""
    y1a, x1a, y2a, x2a = np.split(a, 4, axis=1)
    y1b, x1b, y2b, x2b = np.split(b, 4, axis=1)
    h = np.maximum(np.zeros((a.shape[0], b.shape[0])), np.minimum(y2a, y2b.T) - np.maximum(y1a, y1b.T))
    w = np.maximum(np.zeros((a.shape[0], b.shape[0])), np.minimum(x2a, x2b.T) - np.maximum(x1a, x1b.T))
    inter = h * w
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def _tp_fp(det_boxes, gt_boxes, thr):
    tp = np.zeros(len(det_boxes), dtype=bool)
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return tp
    iou = _iou(det_boxes, gt_boxes)
    best = np.argmax(iou, axis=1)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in range(len(det_boxes)):
        g = best[i]
        if iou[i, g] >= thr and not taken[g]:
            tp[i] = True
            taken[g] = True
    return tp


def _ap(scores, tp, num_gt):
    if num_gt == 0:
        return float("nan")
    idx = np.argsort(scores)[::-1]
    t = tp.astype(int)[idx]
    ctp, cfp = np.cumsum(t), np.cumsum(1 - t)
    prec = ctp.astype(float) / (ctp + cfp)
    rec = ctp.astype(float) / num_gt
    if prec.size == 0:
        return 0.0
    rec = np.concatenate([[0], rec, [1]])
    prec = np.concatenate([[0], prec, [0]])
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    k = np.where(rec[1:] != rec[:-1])[0] + 1
    return float(np.sum((rec[k] - rec[k - 1]) * prec[k]))


def official_or_pyslowfast(gt_rows, det_rows, class_ids, excluded=(), cap=50, thr=0.5, protocol="official"):
    """{class: AP} and mAP (nanmean over an array indexed by id - 1)."""
    wl = set(class_ids)
    mode = "heap" if protocol == "official" else "file"
    gt = _read(gt_rows, wl, 0, mode)
    det = _read(det_rows, wl, (cap or 0) if protocol == "official" else 0, mode)
    ex = set(excluded)
    gt = {k: v for k, v in gt.items() if k not in ex}
    num_gt = defaultdict(int)
    for _, labels, _ in gt.values():
        for c in labels:
            num_gt[c] += 1
    scores, tps = defaultdict(list), defaultdict(list)
    for kf, (boxes, labels, sc) in det.items():
        if kf in ex:
            continue
        b, lab, s = np.array(boxes, float).reshape(-1, 4), np.array(labels, int), np.array(sc, float)
        valid = (b[:, 0] < b[:, 2]) & (b[:, 1] < b[:, 3])
        b, lab, s = b[valid], lab[valid], s[valid]
        gb, gl, _ = gt.get(kf, ([], [], []))
        gb, gl = np.array(gb, float).reshape(-1, 4), np.array(gl, int)
        for c in sorted(wl):
            m = lab == c
            if m.any():
                scores[c].append(s[m])
                tps[c].append(_tp_fp(b[m], gb[gl == c], thr))
    aps = {}
    for c in sorted(wl):
        if num_gt[c] == 0:
            aps[c] = float("nan")
            continue
        s = np.concatenate(scores[c]) if scores[c] else np.array([], float)
        t = np.concatenate(tps[c]) if tps[c] else np.array([], bool)
        aps[c] = _ap(s, t, num_gt[c])
    full = np.full(max(wl), np.nan)
    for c, a in aps.items():
        full[c - 1] = a
    return aps, (float(np.nanmean(full)) if not np.isnan(full).all() else float("nan"))


def mmaction2(gt_rows, det_rows, class_ids, excluded=(), thr=0.5):
    """{class: AP} (classes it reports) and its mAP."""
    wl = set(class_ids)
    gt = _read(gt_rows, wl, 0, "sorted")
    det = _read(det_rows, wl, 0, "sorted")
    ex = set(excluded)
    all_labels = [c for _, labels, _ in gt.values() for c in labels]
    gt_count = {c: sum(1 for x in all_labels if x == c) for c in wl}
    scores, tps = {}, {}
    for kf in gt:
        if kf in ex:
            continue
        gb, gl, _ = gt[kf]
        db, dl, ds = det.get(kf, ([], [], []))
        for c in list(set(dl)):
            g = np.array([x for x, y in zip(gb, gl) if y == c], dtype=np.float32).reshape(-1, 4)
            b = np.array([x for x, y in zip(db, dl) if y == c], dtype=np.float32).reshape(-1, 4)
            s = np.array([x for x, y in zip(ds, dl) if y == c], dtype=np.float32)
            scores.setdefault(c, []).append(s)
            tps.setdefault(c, []).append(_tp_fp(b, g, thr) if g.size else np.zeros(len(b), bool))
    aps = {c: _ap(np.concatenate(scores[c]), np.concatenate(tps[c]), gt_count[c]) for c in scores}
    vals = list(aps.values())
    return aps, (float(np.nanmean(vals)) if vals and not np.isnan(vals).all() else float("nan"))
