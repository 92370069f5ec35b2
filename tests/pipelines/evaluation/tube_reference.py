"""A slow second implementation of JHMDB-21 / UCF101-24 evaluation that follows the structure of
MOC-Detector's frameAP / BuildTubes / videoAP (and ACT's constants): per-video dicts of per-frame
detection arrays in float32, an (N, 8) float32 table of all frame detections, Python loops over
detections with a float32 precision/recall table, tubes as lists of (frame, row) pairs. Written
from reading that code (docs/EVALUATION.md); ties as a stable numpy sort orders them. Rows come in
already in pixels: (video, frame, label index, score, (4,) box), the project's own conversion."""
from __future__ import annotations

import numpy as np

CONST = {  # frame NMS, link NMS, link IoU, frames after the last box before a tube ends (None: K), min score
    "moc": dict(frame=("soft", 0.6), link=("soft", 0.6), link_iou=0.5, end=None, min_score=0.005),
    "act": dict(frame=("hard", 0.3), link=("hard", 0.3), link_iou=0.2, end=5, min_score=0.01),
}


def _iou(a, b):  # boxes a (N, 4) vs one box b (4,), each `+ 1` in its own array's dtype
    a = a.reshape(-1, 4)
    b = b.reshape(1, 4)
    x0 = np.maximum(a[:, 0], b[:, 0])
    y0 = np.maximum(a[:, 1], b[:, 1])
    x1 = np.minimum(a[:, 2] + 1, b[:, 2] + 1)
    y1 = np.minimum(a[:, 3] + 1, b[:, 3] + 1)
    ov = np.maximum(0, x1 - x0) * np.maximum(0, y1 - y0)
    aa = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    bb = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return ov / (aa + bb - ov)


def _loop_iou(d, i, others):
    area = (d[:, 2] - d[:, 0] + 1) * (d[:, 3] - d[:, 1] + 1)
    w = np.maximum(0.0, np.minimum(d[i, 2], d[others, 2]) - np.maximum(d[i, 0], d[others, 0]) + 1)
    h = np.maximum(0.0, np.minimum(d[i, 3], d[others, 3]) - np.maximum(d[i, 1], d[others, 1]) + 1)
    return w * h / (area[i] + area[others] - w * h)


def soft(d, thr):  # d (n, 5) float32: box, score -> a copy with rescored scores
    d = d.copy()
    weight = np.zeros_like(d[:, 4]) + 1
    order = np.argsort(d[:, 4], kind="stable")[::-1]
    while len(order) > 0:
        iou = _loop_iou(d, order[0], order[1:])
        weight[order[1:][iou > thr]] = 1 - iou[iou > thr]
        order = order[1:][iou <= thr]
    d[:, 4] = d[:, 4] * weight
    return d


def hard(d, thr, top_k=None):  # -> indices picked, best first
    order = np.argsort(d[:, 4], kind="stable")
    picked = []
    while len(order) > 0:
        picked.append(order[-1])
        order = order[:-1][_loop_iou(d, order[-1], order[:-1]) <= thr]
        if top_k is not None and len(picked) == top_k:
            break
    return np.array(picked, dtype=np.int64)


def _ap(pr):
    return float(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5))


def per_frame(rows, videos, nframes, n_labels):
    """{video: {frame: {label: (n, 5) float32}}} for every frame 1..n (the per-frame result files)."""
    out = {v: {f: {c: np.zeros((0, 5), np.float32) for c in range(n_labels)} for f in range(1, nframes[v] + 1)}
           for v in videos}
    for v, f, c, s, b in rows:
        out[v][f][c] = np.concatenate([out[v][f][c], np.array([[*b, s]], np.float32)])
    return out


def frame_ap(gt, videos, dets, n_labels, protocol, th=0.5):
    kind, thr = CONST[protocol]["frame"]
    table = []
    for iv, v in enumerate(videos):
        for f in sorted(dets[v]):
            for c in range(n_labels):  # one frame's rows, label after label
                d = dets[v][f][c]
                if not len(d):
                    continue
                d = soft(d, thr) if kind == "soft" else d[hard(d, thr)]
                for r in d:
                    table.append([iv, f, c, r[4], r[0], r[1], r[2], r[3]])
    table = np.array(table, np.float32).reshape(-1, 8)
    aps = []
    for c in range(n_labels):
        det = table[table[:, 2] == c]
        g = {}
        for iv, v in enumerate(videos):
            for label, t in gt.tubes[v]:
                if label == c:
                    for row in t:
                        g.setdefault((iv, int(row[0])), []).append(row[1:5].tolist())
        g = {k: np.array(x) for k, x in g.items()}
        n_gt = sum(len(x) for x in g.values())
        if n_gt == 0:
            aps.append(np.nan)
            continue
        pr = np.empty((len(det) + 1, 2), np.float32)
        pr[0] = [1.0, 0.0]
        tp = fp = 0
        for i, j in enumerate(np.argsort(-det[:, 3], kind="stable")):
            k = (int(det[j, 0]), int(det[j, 1]))
            ok = False
            if k in g:
                ious = _iou(g[k], det[j, 4:8])
                m = np.argmax(ious)
                if ious[m] >= th:
                    ok = True
                    g[k] = np.delete(g[k], m, 0)
                    if g[k].size == 0:
                        del g[k]
            tp, fp = tp + ok, fp + (not ok)
            pr[i + 1] = [tp / (tp + fp), tp / n_gt]
        aps.append(_ap(pr))
    return np.array(aps)


def build_tubes(dets_v, nframes, n_labels, protocol, min_length=15):
    """{label: [(tube (L, 6) float32, score)]} for one video (frame-by-frame linking, K = 1)."""
    cst = CONST[protocol]
    kind, thr = cst["link"]
    end = 1 if cst["end"] is None else cst["end"]
    res = {}
    for c in range(n_labels):
        finished, current = [], []

        def score(t):
            return np.mean(np.array([x[1][-1] for x in t]))

        for frame in range(1, nframes + 1):
            d = dets_v[frame][c]
            if kind == "soft":
                d = soft(d, thr)
                d = d[np.argsort(d[:, 4], kind="stable")[::-1]][:10]
            else:
                d = d[hard(d, thr, 10)]
            if current:
                current = [current[i] for i in np.argsort(-np.array([score(t) for t in current]), kind="stable")]
            stop = []
            for it, t in enumerate(current):
                last_frame, last = t[-1]
                ious = _iou(d[:, :4], last[:4])
                ok = np.where(ious >= cst["link_iou"])[0]
                if ok.size:
                    j = ok[np.argmax(d[ok, -1])]
                    t.append((frame, d[j]))
                    d = np.delete(d, j, 0)
                elif frame - last_frame >= end:
                    stop.append(it)
            for it in stop[::-1]:
                finished.append(current[it])
                del current[it]
            current += [[(frame, d[i])] for i in range(len(d))]
        out = []
        for t in finished + current:
            s = score(t)
            if s < cst["min_score"] or t[-1][0] + 1 - t[0][0] < min_length:
                continue
            tube = np.zeros((t[-1][0] + 1 - t[0][0], 6), np.float32)
            tube[:, 0] = np.arange(t[0][0], t[-1][0] + 1)
            n = np.zeros((len(tube), 1), np.int32)
            for f, r in t:
                tube[f - t[0][0], 1:5] += r[:4]
                tube[f - t[0][0], 5] += r[4]
                n[f - t[0][0]] += 1
            with np.errstate(invalid="ignore"):
                tube[:, 1:] /= n
            out.append((tube, s))
        res[c] = out
    return res


def tube_iou(a, b):
    lo, hi = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if hi < lo:
        return 0.0
    ta = a[int(np.where(a[:, 0] == lo)[0][0]):int(np.where(a[:, 0] == hi)[0][0]) + 1]
    tb = b[int(np.where(b[:, 0] == lo)[0][0]):int(np.where(b[:, 0] == hi)[0][0]) + 1]
    x0 = np.maximum(ta[:, 1], tb[:, 1])
    y0 = np.maximum(ta[:, 2], tb[:, 2])
    x1 = np.minimum(ta[:, 3] + 1, tb[:, 3] + 1)
    y1 = np.minimum(ta[:, 4] + 1, tb[:, 4] + 1)
    ov = np.maximum(0, x1 - x0) * np.maximum(0, y1 - y0)
    aa = (ta[:, 3] - ta[:, 1] + 1) * (ta[:, 4] - ta[:, 2] + 1)
    bb = (tb[:, 3] - tb[:, 1] + 1) * (tb[:, 4] - tb[:, 2] + 1)
    return np.mean(ov / (aa + bb - ov)) * ((hi - lo + 1) / (max(a[-1, 0], b[-1, 0]) - min(a[0, 0], b[0, 0]) + 1))


def tube_nms(tubes, thr=0.3):
    order = np.argsort([t[1] for t in tubes], kind="stable")
    keep = []
    while order.size > 0:
        i = order[-1]
        keep.append(i)
        ious = np.array([tube_iou(tubes[j][0], tubes[i][0]) for j in order[:-1]])
        order = order[np.where(ious <= thr)[0]]
    return keep


def video_ap(gt, videos, tubes, n_labels, th):
    aps = []
    for c in range(n_labels):
        dets = []
        for v in videos:
            lt = tubes[v][c]
            dets += [(v, lt[i][1], lt[i][0]) for i in tube_nms(lt)]
        g = {v: [t for label, t in gt.tubes[v] if label == c] for v in videos}
        g = {v: x for v, x in g.items() if x}
        n_gt = sum(len(x) for x in g.values())
        if n_gt == 0:
            aps.append(np.nan)
            continue
        pr = np.empty((len(dets) + 1, 2), np.float32)
        pr[0] = [1.0, 0.0]
        tp = fp = 0
        for i, j in enumerate(np.argsort(-np.array([d[1] for d in dets]), kind="stable")):
            v, _, tube = dets[j]
            ok = False
            if v in g:
                ious = [tube_iou(x, tube) for x in g[v]]
                m = np.argmax(ious)
                if ious[m] >= th:
                    ok = True
                    del g[v][m]
                    if not g[v]:
                        del g[v]
            tp, fp = tp + ok, fp + (not ok)
            pr[i + 1] = [tp / (tp + fp), tp / n_gt]
        aps.append(_ap(pr))
    return np.array(aps)


def evaluate(gt, videos, rows, protocol="moc", video_ious=(0.2, 0.5, 0.75)):
    """(frame AP per class, {threshold: video AP per class}, video AP per class at 0.5:0.95)."""
    n_labels = len(gt.labels)
    dets = per_frame(rows, videos, gt.nframes, n_labels)
    fap = frame_ap(gt, videos, dets, n_labels, protocol)
    tubes = {v: build_tubes(dets[v], gt.nframes[v], n_labels, protocol) for v in videos}
    vap = {t: video_ap(gt, videos, tubes, n_labels, t) for t in video_ious}
    all_ = np.mean([video_ap(gt, videos, tubes, n_labels, 0.5 + 0.05 * i) for i in range(10)], axis=0)
    return fap, vap, all_
