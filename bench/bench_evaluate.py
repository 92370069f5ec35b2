"""Benchmark: vectorised `frame_map` vs a straightforward per-keyframe Python loop.

    PYTHONPATH=. python bench/bench_evaluate.py [--keyframes 5000] [--boxes 5] [--classes 60] [--seed 0]

Generates a seeded random AVA-like input (every detected box scored for every class, as a model's
output file is), runs both evaluators in this process, checks they agree on the mAP and prints the
speed ratio. The loop baseline follows the official code's structure: a bounded heap per keyframe,
then per keyframe and class a greedy match, then per class a sort and the all-point AP.
"""
from __future__ import annotations

import argparse
import heapq
import time
from collections import defaultdict

import numpy as np

from pipelines.evaluate import frame_map


def make_input(n_kf: int, n_box: int, n_cls: int, seed: int):
    rng = np.random.default_rng(seed)
    # GT: n_box people per keyframe, each with 1-3 actions
    xy = rng.uniform(0, 0.7, (n_kf, n_box, 2))
    wh = rng.uniform(0.1, 0.3, (n_kf, n_box, 2))
    gbox = np.concatenate([xy, xy + wh], -1).reshape(-1, 4)
    n_lab = rng.integers(1, 4, gbox.shape[0])
    g_row = np.repeat(np.arange(gbox.shape[0]), n_lab)
    gt_kf = g_row // n_box
    gt_box = gbox[g_row]
    gt_cls = rng.integers(1, n_cls + 1, g_row.size)
    # detections: jittered GT boxes (some far off), a score for every class
    dbox = gbox + rng.normal(0, 0.04, gbox.shape) * rng.choice([1, 5], gbox.shape[0], p=[0.8, 0.2])[:, None]
    dbox = np.clip(dbox, 0, 1)
    det_kf = np.repeat(np.arange(gbox.shape[0]) // n_box, n_cls)
    det_box = np.repeat(dbox, n_cls, axis=0)
    det_cls = np.tile(np.arange(1, n_cls + 1), gbox.shape[0])
    det_score = rng.random(det_kf.size)
    # the true classes of each box get a boost
    boost = np.zeros((gbox.shape[0], n_cls))
    boost[g_row, gt_cls - 1] = rng.uniform(0, 0.8, g_row.size)
    det_score = np.round(det_score + boost.ravel(), 6)  # 6 decimals, as written in a CSV: some ties
    return (gt_kf, gt_box, gt_cls), (det_kf, det_box, det_cls, det_score)


def loop_frame_map(gt, det, class_ids, cap=50, thr=0.5):
    """Per-keyframe Python loop (official structure; ties by input order as in `frame_map`)."""
    gt_kf, gt_box, gt_cls = gt
    det_kf, det_box, det_cls, det_score = det
    cset = set(class_ids)
    gts = defaultdict(list)
    for k, b, c in zip(gt_kf.tolist(), gt_box.tolist(), gt_cls.tolist()):
        if c in cset:
            gts[k].append((c, b))
    heaps = defaultdict(list)
    for i, (k, c, s) in enumerate(zip(det_kf.tolist(), det_cls.tolist(), det_score.tolist())):
        if c not in cset:
            continue
        x1, y1, x2, y2 = det_box[i]
        item = (s, c, y1, x1, y2, x2, -i)  # -i: a stable order among equal tuples, used below
        h = heaps[k]
        if cap is None or len(h) < cap:
            heapq.heappush(h, item)
        elif s > h[0][0]:
            heapq.heapreplace(h, item)
    scores, tps = defaultdict(list), defaultdict(list)
    for k, h in heaps.items():
        by_cls = defaultdict(list)
        for s, c, y1, x1, y2, x2, negi in h:
            if x1 < x2 and y1 < y2 and s > -10:
                by_cls[c].append((-negi, s, (x1, y1, x2, y2)))
        for c, dets in by_cls.items():
            dets.sort(key=lambda d: (-d[1], d[0]))
            g = np.array([b for cc, b in gts.get(k, []) if cc == c], dtype=np.float64).reshape(-1, 4)
            taken = np.zeros(len(g), dtype=bool)
            for i, s, b in dets:
                tp = False
                if len(g):
                    iw = np.clip(np.minimum(b[2], g[:, 2]) - np.maximum(b[0], g[:, 0]), 0, None)
                    ih = np.clip(np.minimum(b[3], g[:, 3]) - np.maximum(b[1], g[:, 1]), 0, None)
                    inter = iw * ih
                    iou = inter / ((b[2] - b[0]) * (b[3] - b[1]) + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) - inter)
                    j = int(np.argmax(iou))
                    if iou[j] >= thr and not taken[j]:
                        taken[j] = tp = True
                scores[c].append((s, i))
                tps[c].append(tp)
    num_gt = defaultdict(int)
    for lst in gts.values():
        for c, _ in lst:
            num_gt[c] += 1
    aps = []
    for c in class_ids:
        if num_gt[c] == 0:
            continue
        order = sorted(range(len(scores[c])), key=lambda j: (-scores[c][j][0], scores[c][j][1]))
        cum_tp = cum_fp = 0
        prec, rec = [0.0], [0.0]
        for j in order:
            cum_tp += tps[c][j]
            cum_fp += not tps[c][j]
            prec.append(cum_tp / (cum_tp + cum_fp))
            rec.append(cum_tp / num_gt[c])
        prec.append(0.0), rec.append(1.0)
        for i in range(len(prec) - 2, -1, -1):
            prec[i] = max(prec[i], prec[i + 1])
        aps.append(sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec)) if rec[i] != rec[i - 1]))
    return float(np.mean(aps))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keyframes", type=int, default=5000, help="keyframes (val is ~50k)")
    ap.add_argument("--boxes", type=int, default=5, help="people per keyframe")
    ap.add_argument("--classes", type=int, default=60, help="classes scored per box")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-loop", action="store_true", help="time only the vectorised evaluator")
    a = ap.parse_args()
    gt, det = make_input(a.keyframes, a.boxes, a.classes, a.seed)
    ids = list(range(1, a.classes + 1))
    print(f"input: {a.keyframes} keyframes, {gt[0].size} GT rows, {det[0].size} (box, class) candidates")
    t0 = time.perf_counter()
    res = frame_map(*gt, *det, class_ids=ids)
    t_vec = time.perf_counter() - t0
    print(f"vectorised frame_map: mAP {res.map:.6f} in {t_vec:.2f} s")
    t0 = time.perf_counter()
    res_nc = frame_map(*gt, *det, class_ids=ids, max_dets_per_kf=None)
    print(f"vectorised frame_map, no cap: mAP {res_nc.map:.6f} in {time.perf_counter() - t0:.2f} s")
    if a.skip_loop:
        return
    t0 = time.perf_counter()
    m_loop = loop_frame_map(gt, det, ids)
    t_loop = time.perf_counter() - t0
    print(f"python-loop baseline: mAP {m_loop:.6f} in {t_loop:.2f} s")
    assert abs(m_loop - res.map) < 1e-9, (m_loop, res.map)
    print(f"same mAP (|diff| < 1e-9); speed-up {t_loop / t_vec:.1f}x")


if __name__ == "__main__":
    main()
