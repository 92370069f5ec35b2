"""Test-side reference of MultiSports' evaluation, written independently of the package, step by step
in the structure of MCG-NJU/MultiSports `evaluate_multisports.py` (frameAP / videoAP / videoAP_all
over a GT dict and the detections in its own layouts) and of MMAction2's `link_tubes` (the frame
detections array -> the video detections dict), with each linked box keeping its own score.

The one choice: where scores tie, a stable sort (the earlier entry first) stands for numpy's
default sort, whose order among equal values is not fixed.
"""
import numpy as np

SKIP = {"aerobic kick jump", "aerobic off axis jump", "aerobic butterfly jump", "aerobic balance turn",
        "basketball save", "basketball jump ball"}


def argsort_desc(x):
    return np.argsort(-np.asarray(x), kind="stable")


def box_area(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_inter(b1, b2):
    xmin = np.maximum(b1[:, 0], b2[:, 0])
    ymin = np.maximum(b1[:, 1], b2[:, 1])
    xmax = np.minimum(b1[:, 2], b2[:, 2])
    ymax = np.minimum(b1[:, 3], b2[:, 3])
    return np.maximum(0, xmax - xmin) * np.maximum(0, ymax - ymin)


def iou_many_one(b1, b2):
    b1 = b1[None, :] if b1.ndim == 1 else b1
    b2 = b2[None, :] if b2.ndim == 1 else b2
    ov = box_inter(b1, b2)
    return ov / (box_area(b1) + box_area(b2) - ov)


def tube_iou(b1, b2):
    t0 = max(b1[0, 0], b2[0, 0])
    t1 = min(b1[-1, 0], b2[-1, 0])
    if t1 < t0:
        return 0.0
    t_inter = t1 - t0
    t_union = max(b1[-1, 0], b2[-1, 0]) - min(b1[0, 0], b2[0, 0])
    a = b1[int(np.flatnonzero(b1[:, 0] == t0)[0]): int(np.flatnonzero(b1[:, 0] == t1)[0]) + 1]
    b = b2[int(np.flatnonzero(b2[:, 0] == t0)[0]): int(np.flatnonzero(b2[:, 0] == t1)[0]) + 1]
    assert len(a) == len(b) and (a[:, 0] == b[:, 0]).all()
    ov = box_inter(a[:, 1:5], b[:, 1:5])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.mean(ov / (box_area(a[:, 1:5]) + box_area(b[:, 1:5]) - ov)) * (t_inter / t_union)


def voc_area(pr):
    rec = np.concatenate([[0], pr[:, 1], [1]])
    prec = np.concatenate([[0], pr[:, 0], [0]])
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    idx = np.where(rec[1:] != rec[:-1])[0] + 1
    return np.sum((rec[idx] - rec[idx - 1]) * prec[idx])


def frame_ap(GT, alldets, thr):
    """{label: AP} over the evaluated labels with GT; alldets (N, 8) video index, frame, label, score, box."""
    vlist = GT["test_videos"][0]
    out = {}
    for ilabel, label in enumerate(GT["labels"]):
        if label in SKIP:
            continue
        dets = alldets[alldets[:, 2] == ilabel, :]
        gt = {}
        for iv, v in enumerate(vlist):
            for tube in GT["gttubes"][v].get(ilabel, []):
                for row in tube:
                    gt.setdefault((iv, int(row[0])), []).append(row[1:5].tolist())
        gt = {k: np.array(b) for k, b in gt.items()}
        n_gt = sum(len(b) for b in gt.values())
        if n_gt == 0:
            continue
        pr = np.empty((len(dets), 2))
        tp = fp = 0
        used = {}
        for i, j in enumerate(argsort_desc(dets[:, 3])):
            k = (int(dets[j, 0]), int(dets[j, 1]))
            hit = False
            if k in gt:
                used.setdefault(k, np.zeros(len(gt[k]), bool))
                ious = iou_many_one(gt[k], dets[j, 4:8])
                m = np.argmax(ious)
                if ious[m] >= thr and not used[k][m]:
                    hit = used[k][m] = True
            tp, fp = tp + hit, fp + (not hit)
            pr[i] = (tp / (tp + fp), tp / n_gt)
        out[label] = voc_area(pr)
    return out


def video_ap(GT, alldets, thr):
    """{label: AP}; alldets {label index: [(video, score, tube (L, 6))]}."""
    vlist = GT["test_videos"][0]
    out = {}
    for ilabel, label in enumerate(GT["labels"]):
        if label in SKIP:
            continue
        dets = alldets[ilabel]
        gt = {v: GT["gttubes"][v][ilabel] for v in vlist if len(GT["gttubes"][v].get(ilabel, []))}
        n_gt = sum(len(g) for g in gt.values())
        if n_gt == 0:
            continue
        pr = np.empty((len(dets), 2))
        tp = fp = 0
        used = {}
        for i, j in enumerate(argsort_desc([d[1] for d in dets])):
            v, _, tube = dets[j]
            hit = False
            if v in gt:
                used.setdefault(v, np.zeros(len(gt[v]), bool))
                ious = [tube_iou(g, tube) for g in gt[v]]
                m = np.argmax(ious)
                if ious[m] >= thr and not used[v][m]:
                    hit = used[v][m] = True
            tp, fp = tp + hit, fp + (not hit)
            pr[i] = (tp / (tp + fp), tp / n_gt)
        out[label] = voc_area(pr)
    return out


def video_ap_all(GT, alldets):
    """videoAP_all's 0.10:0.90 average (of the mAPs)."""
    return sum(np.mean(list(video_ap(GT, alldets, 0.1 + 0.1 * i).values())) for i in range(9)) / 9.0


def soft_nms(dets, thr=0.6, top_k=10):
    """nms_tubelets at K = 1 on rows x1, y1, x2, y2, score."""
    if len(dets) == 0:
        return dets
    dets = dets.copy()
    x1, y1, x2, y2, s = (dets[:, i] for i in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(s, kind="stable")[::-1]
    weight = np.ones_like(s)
    while order.size > 0:
        i, rest = order[0], order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        ious = w * h / (area[rest] + area[i] - w * h)
        weight[rest[ious > thr]] = 1 - ious[ious > thr]
        order = rest[ious <= thr]
    dets[:, -1] = dets[:, -1] * weight
    return dets[np.argsort(dets[:, -1], kind="stable")[::-1]][:top_k]


def link_tubes(GT, frm_dets, len_thre=15):
    """MMAction2's link_tubes at K = 1 (each box keeps its own score) -> {label: [(video, score, tube)]}."""
    vlist, labels = GT["test_videos"][0], GT["labels"]
    per_video = {}
    for d in frm_dets:
        per_video.setdefault(vlist[int(d[0])], []).append(d)
    out = {c: [] for c in range(len(labels))}
    for v in vlist:
        if v not in per_video:
            continue
        grid = {}
        for d in per_video[v]:
            grid.setdefault((int(d[1]), int(d[2])), []).append(np.r_[d[4:8], d[3]])
        for c in range(len(labels)):
            finished, current = [], []
            mean_score = lambda t: np.mean(np.array([x[1][-1] for x in t]))  # noqa: E731
            for frame in range(1, GT["nframes"][v] + 1):
                cand = soft_nms(np.array(grid.get((frame, c), np.empty((0, 5)))).reshape(-1, 5))
                if frame == 1:
                    current = [[(1, cand[i])] for i in range(len(cand))]
                    continue
                current = [current[i] for i in argsort_desc([mean_score(t) for t in current])]
                ended = []
                for it, t in enumerate(current):
                    ious = iou_many_one(cand[:, :4], t[-1][1][:4]) if len(cand) else np.zeros(0)
                    ok = np.where(ious >= 0.5)[0]
                    if ok.size:
                        pick = ok[np.argmax(cand[ok, -1])]
                        t.append((frame, cand[pick]))
                        cand = np.delete(cand, pick, axis=0)
                    else:
                        ended.append(it)
                for it in ended[::-1]:
                    finished.append(current.pop(it))
                current += [[(frame, cand[i])] for i in range(len(cand))]
            for t in finished + current:
                score = mean_score(t)
                first, last = t[0][0], t[-1][0]
                if score < 0.005 or last + 1 - first < len_thre:
                    continue
                tube = np.zeros((last + 1 - first, 6), np.float32)
                tube[:, 0] = np.arange(first, last + 1)
                for f, b in t:
                    tube[f - first, 1:5] += b[:4]
                    tube[f - first, 5] += b[-1]
                out[c].append((v, score, tube))
    return out
