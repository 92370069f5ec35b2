"""AVA frame-mAP: hand-computed APs, a loop-based reference of the official protocol, files and CLI."""
from __future__ import annotations

import heapq
import json
import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from extract import ava_io
from pipelines.commands.evaluate import evaluate_cli
from pipelines.evaluate import (DEFAULT_LABEL_MAP, EvalResult, _cap_prefilter, _official_cap, class_groups, evaluate_files,
                                frame_map, frame_map_single_label, plot_pr_curves)

A = [0.0, 0.0, 0.5, 0.5]
B = [0.5, 0.5, 1.0, 1.0]
A_NEAR = [0.0, 0.0, 0.5, 0.45]  # IoU(A) = 0.9, IoU(A_LOW) = 0.727
A_LOW = [0.0, 0.05, 0.5, 0.55]  # IoU(A) = 0.818
SMALL = [0.0, 0.0, 0.25, 0.25]  # IoU(A) = 0.25
C = [0.2, 0.2, 0.6, 0.6]


def fm(gt, det, class_ids=(1, 2), **kw) -> EvalResult:
    """gt: [(kf, box, cls)], det: [(kf, box, cls, score)]."""
    g = list(zip(*gt)) if gt else [[], np.zeros((0, 4)), []]
    d = list(zip(*det)) if det else [[], np.zeros((0, 4)), [], []]
    return frame_map(g[0], np.array(g[1], float).reshape(-1, 4), g[2], d[0], np.array(d[1], float).reshape(-1, 4),
                     d[2], d[3], class_ids=list(class_ids), **kw)


# ----------------------------------------------------------------------------- hand-computed

BASE_GT = [(1, A, 1), (1, B, 1)]
BASE_DET = [(1, A_NEAR, 1, 0.9), (1, SMALL, 1, 0.8), (1, B, 1, 0.7)]  # TP, FP, TP


def test_basic_all_point_interpolation():
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 0.5 * 1 + 0.5 * 2/3
    r = fm(BASE_GT, BASE_DET, class_ids=[1])
    assert r.per_class[1] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert r.map == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_ties_in_score_keep_given_order():
    gt = [(1, A, 1)]
    fp_first = [(2, A, 1, 0.5), (1, A, 1, 0.5)]  # FP (keyframe 2 has no GT) listed before the TP
    # ranking FP, TP: precision 0, 1/2 at recall 0, 1 -> AP 1/2; the other way round AP 1
    assert fm(gt, fp_first, class_ids=[1]).map == pytest.approx(0.5)
    assert fm(gt, fp_first[::-1], class_ids=[1]).map == pytest.approx(1.0)
    # ties inside one keyframe: the first given claims the GT box, the second is a FP
    same_kf = [(1, A_NEAR, 1, 0.5), (1, A, 1, 0.5)]
    assert fm(gt, same_kf, class_ids=[1]).map == pytest.approx(1.0)


def test_duplicate_detections():
    # A_NEAR twice: second copy finds its GT already matched -> FP; then B TP
    det = [(1, A_NEAR, 1, 0.9), (1, A_NEAR, 1, 0.8), (1, B, 1, 0.7)]
    assert fm(BASE_GT, det, class_ids=[1]).map == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_two_detections_on_one_gt_no_fallback():
    # A takes GT A; A_NEAR's best GT is also A (0.9 > 0.727 with A_LOW): FP, no fall back to A_LOW.
    gt = [(1, A, 1), (1, A_LOW, 1)]
    det = [(1, A, 1, 0.9), (1, A_NEAR, 1, 0.8)]
    assert fm(gt, det, class_ids=[1]).map == pytest.approx(0.5)  # precision 1 at recall 1/2 only


def test_classes_without_detections_or_gt():
    gt = BASE_GT + [(1, C, 2)]  # class 2: GT, no detection -> AP 0
    det = BASE_DET + [(1, C, 3, 0.99)]  # class 3: detection, no GT -> NaN, not in mAP
    r = fm(gt, det, class_ids=[1, 2, 3])
    assert r.per_class[2] == 0.0 and math.isnan(r.per_class[3])
    assert r.map == pytest.approx((0.5 + 0.5 * 2 / 3 + 0.0) / 2)
    assert r.num_gt == {1: 2, 2: 1, 3: 0} and r.num_det == {1: 3, 2: 0, 3: 1}
    # classes outside the label map are ignored entirely (GT and detections)
    assert fm(gt, det, class_ids=[1]).map == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_excluded_keyframes_and_keyframes_without_gt():
    # keyframe 3: an unmatched GT box and a high-scoring FP. Excluded -> as if absent.
    gt = BASE_GT + [(3, C, 1)]
    det = BASE_DET + [(3, SMALL, 1, 0.95)]
    assert fm(gt, det, class_ids=[1], excluded_kf=[3]).map == pytest.approx(0.5 + 0.5 * 2 / 3)
    # not excluded: FP, TP, FP, TP over 3 GT -> precisions 0, 1/2, 1/3, 1/2 ; recalls 0, 1/3, 1/3, 2/3
    assert fm(gt, det, class_ids=[1]).map == pytest.approx(1 / 3 * 0.5 + 1 / 3 * 0.5)
    # keyframe 4 has no GT at all: its detection is a FP (MMAction2 would drop it)
    det4 = BASE_DET + [(4, A, 1, 0.95)]
    # FP, TP, FP, TP over 2 GT: precision 0, 1/2, 1/3, 1/2 at recall 0, 1/2, 1/2, 1 -> AP 1/2
    assert fm(BASE_GT, det4, class_ids=[1]).map == pytest.approx(0.5)


def test_more_than_50_detections_per_keyframe():
    gt = [(1, A, 1)]
    rng = np.random.default_rng(0)
    others = [(1, list(SMALL), 2, 0.6 + 0.3 * rng.random()) for _ in range(50)]  # class 2: no GT
    det = others + [(1, A, 1, 0.5)]  # the only class-1 detection ranks 51st in its keyframe
    assert fm(gt, det).per_class[1] == 0.0  # capped away: AP 0
    assert fm(gt, det, max_dets_per_kf=None).per_class[1] == 1.0
    assert fm(gt, det[1:]).per_class[1] == 1.0  # 50 detections: all kept


def test_cap_matches_official_heap_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(300):
        n, cap = int(rng.integers(1, 40)), int(rng.integers(1, 9))
        kf = rng.integers(0, 3, n)
        cls = rng.integers(1, 4, n)
        box = rng.integers(0, 3, (n, 4)).astype(float)
        score = rng.integers(0, 4, n).astype(float)  # many ties
        keep = _official_cap(kf, cls, box, score, cap)
        heaps = defaultdict(list)
        for i in range(n):  # the official read_csv capacity logic
            item = (score[i], cls[i], box[i, 1], box[i, 0], box[i, 3], box[i, 2])
            h = heaps[kf[i]]
            if len(h) < cap:
                heapq.heappush(h, item)
            elif score[i] > h[0][0]:
                heapq.heapreplace(h, item)
        want = sorted((k, *t) for k, h in heaps.items() for t in h)
        got = sorted((kf[i], score[i], cls[i], box[i, 1], box[i, 0], box[i, 3], box[i, 2]) for i in np.flatnonzero(keep))
        assert got == want


def test_cap_prefilter_never_changes_the_selection():
    # the O(n) binning prefilter must keep a superset that yields the same official selection,
    # with negative scores, -0.0 vs 0.0 and heavy ties
    rng = np.random.default_rng(2)
    for t in range(100):
        n, cap = int(rng.integers(1, 300)), int(rng.integers(1, 60))
        kf = rng.integers(0, 4, n)
        score = rng.choice([-3.5, -0.0, 0.0, 1e-8, -1e-8, 0.25, 7.0], n) if t % 2 else rng.normal(0, 5, n)
        cls, box = rng.integers(1, 4, n), rng.random((n, 4))
        full = _official_cap(kf, cls, box, score, cap)
        pre = np.flatnonzero(_cap_prefilter(kf, score, cap))
        sub = _official_cap(kf[pre], cls[pre], box[pre], score[pre], cap)
        assert set(pre[sub].tolist()) == set(np.flatnonzero(full).tolist())


def test_timestamp_formats_are_one_keyframe(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("vid,0902,0.0,0.0,0.5,0.5,1,0\nvid,903,0.5,0.5,1.0,1.0,1,1\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("vid,902.000000,0.0,0.0,0.5,0.5,1,0.9\nvid,0903.0,0.5,0.5,1.0,1.0,1,0.8\n"
                    "vid,902,0.0,0.0,0.5,0.5,1,0.7\n")  # the last one: duplicate on 902 -> FP
    excl = tmp_path / "ex.csv"
    r = evaluate_files(gt, pred, DEFAULT_LABEL_MAP)
    assert r.per_class[1] == pytest.approx(1.0)
    assert r.map == pytest.approx(1.0)  # only class 1 has GT
    excl.write_text("vid,903.000\n")
    r = evaluate_files(gt, pred, DEFAULT_LABEL_MAP, excluded_csv=excl)
    assert r.per_class[1] == pytest.approx(1.0) and r.num_gt[1] == 1 and r.num_det[1] == 2


# ----------------------------------------------------------------------------- loop reference

def reference_frame_map(gt, det, class_ids, cap=50, thr=0.5, excluded=()):
    """The official protocol written as plain loops (ties: order given)."""
    gts = defaultdict(list)
    for k, b, c in gt:
        if c in class_ids and k not in excluded:
            gts[k].append((c, b))
    heaps = defaultdict(list)
    for i, (k, b, c, s) in enumerate(det):
        if c not in class_ids or k in excluded:
            continue
        item = (s, c, b[1], b[0], b[3], b[2], -i)
        h = heaps[k]
        if cap is None or len(h) < cap:
            heapq.heappush(h, item)
        elif s > h[0][0]:
            heapq.heapreplace(h, item)
    ranked = defaultdict(list)
    for k, h in heaps.items():
        for c in class_ids:
            ds = sorted([(-negi, s, (x1, y1, x2, y2)) for s, cc, y1, x1, y2, x2, negi in h
                         if cc == c and x1 < x2 and y1 < y2], key=lambda d: (-d[1], d[0]))
            g = [b for cc, b in gts.get(k, []) if cc == c]
            taken = [False] * len(g)
            for i, s, b in ds:
                best, best_j = -1.0, -1
                for j, gb in enumerate(g):
                    iw = max(0.0, min(b[2], gb[2]) - max(b[0], gb[0]))
                    ih = max(0.0, min(b[3], gb[3]) - max(b[1], gb[1]))
                    inter = iw * ih
                    iou = inter / ((b[2] - b[0]) * (b[3] - b[1]) + (gb[2] - gb[0]) * (gb[3] - gb[1]) - inter)
                    if iou > best:
                        best, best_j = iou, j
                tp = best_j >= 0 and best >= thr and not taken[best_j]
                if tp:
                    taken[best_j] = True
                ranked[c].append((-s, i, tp))
    aps = {}
    for c in class_ids:
        n_gt = sum(cc == c for lst in gts.values() for cc, _ in lst)
        if n_gt == 0:
            aps[c] = float("nan")
            continue
        tp_cum, prec, rec = 0, [0.0], [0.0]
        for n, (_, _, tp) in enumerate(sorted(ranked[c]), start=1):
            tp_cum += tp
            prec.append(tp_cum / n)
            rec.append(tp_cum / n_gt)
        prec.append(0.0), rec.append(1.0)
        for i in range(len(prec) - 2, -1, -1):
            prec[i] = max(prec[i], prec[i + 1])
        aps[c] = sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec)) if rec[i] != rec[i - 1])
    return aps


@pytest.mark.parametrize("seed,cap,shuffle", [(0, 50, False), (1, 8, False), (2, None, False), (3, 8, True)])
def test_matches_loop_reference_on_random_input(seed, cap, shuffle):
    rng = np.random.default_rng(seed)
    n_kf, classes = 30, [1, 2, 3, 4, 5]
    gt, det = [], []
    for k in range(n_kf):
        for _ in range(rng.integers(0, 4)):
            xy = rng.uniform(0, 0.6, 2)
            b = [*xy, *(xy + rng.uniform(0.1, 0.4, 2))]
            for c in rng.choice([1, 2, 3, 4, 5, 9], rng.integers(1, 3), replace=False):
                gt.append((k, b, int(c)))
            for _ in range(rng.integers(1, 3)):
                db = list(np.clip(np.array(b) + rng.normal(0, 0.05, 4), 0, 1))
                for c in [1, 2, 3, 4, 5, 9]:
                    det.append((k, db, c, float(np.round(rng.random(), 2))))  # 2 decimals: ties
    det.append((n_kf + 1, [0.1, 0.1, 0.2, 0.2], 1, 0.99))  # keyframe without GT
    det.append((0, [0.3, 0.3, 0.3, 0.5], 2, 0.98))  # empty box: dropped
    if shuffle:  # keyframes interleaved in the file (not grouped): the general code path
        det = [det[i] for i in rng.permutation(len(det))]
    excluded = {3, 4}
    got = fm(gt, det, classes, max_dets_per_kf=cap, excluded_kf=sorted(excluded))
    want = reference_frame_map(gt, det, classes, cap=cap, excluded=excluded)
    torch.testing.assert_close(torch.tensor([got.per_class[c] for c in classes], dtype=torch.float64),
                               torch.tensor([want[c] for c in classes], dtype=torch.float64), equal_nan=True)
    assert got.map == pytest.approx(np.nanmean([want[c] for c in classes]))


# ----------------------------------------------------------------------------- single label, groups, CLI

def test_single_label_frame_map_and_check(tmp_path):
    # 2 classes; keyframe 1: one box labelled 1, keyframe 2: one box labelled 2
    gt_kf, gt_box, gt_lab = [1, 2], np.array([A, B]), [1, 2]
    det_kf, det_box = [1, 2, 2], np.array([A_NEAR, B, SMALL])
    scores = np.array([[0.9, 0.1], [0.3, 0.8], [0.2, 0.7]])  # columns: class 1, class 2
    r = frame_map_single_label(gt_kf, gt_box, gt_lab, det_kf, det_box, scores, class_ids=[1, 2])
    # class 1: 0.9 TP (kf1), 0.3 FP, 0.2 FP -> AP 1 ; class 2: 0.8 TP, 0.7 FP, 0.1 FP -> AP 1
    assert r.per_class == {1: 1.0, 2: 1.0}
    scores2 = np.array([[0.2, 0.1], [0.3, 0.8], [0.9, 0.7]])
    r2 = frame_map_single_label(gt_kf, gt_box, gt_lab, det_kf, det_box, scores2, class_ids=[1, 2])
    # class 1 ranked 0.9 FP, 0.3 FP, 0.2 TP: precision 1/3 at recall 1 -> AP 1/3
    assert r2.per_class[1] == pytest.approx(1 / 3)
    gt = tmp_path / "gt.csv"
    gt.write_text("v,1,0.0,0.0,0.5,0.5,1\nv,1,0.0,0.0,0.5,0.5,2\n")
    pred = tmp_path / "p.csv"
    pred.write_text("v,1,0.0,0.0,0.5,0.5,1,0.9\n")
    with pytest.raises(ValueError, match="several labels"):
        evaluate_files(gt, pred, DEFAULT_LABEL_MAP, single_label=True)


def test_class_groups(tmp_path):
    lm60 = ava_io.read_label_map(DEFAULT_LABEL_MAP)
    g = class_groups(lm60)
    assert set(g) == {"pose", "person-object", "person-person"}
    assert sorted(sum(g.values(), [])) == sorted(lm60.ids)
    assert 2 not in g["pose"] and 1 in g["pose"] and 80 in g["person-person"] and 17 in g["person-object"]
    synth = ava_io.LabelMap([1, 2, 3], ["walk fast", "jump high", "wave"])
    with pytest.raises(ValueError, match="groups JSON"):
        class_groups(synth)
    f = tmp_path / "groups.json"
    f.write_text(json.dumps({"motion": [1, 2], "social": [3, 99]}))
    assert class_groups(synth, f) == {"motion": [1, 2], "social": [3]}
    r = EvalResult(0.5, {1: 0.2, 2: float("nan"), 3: 0.6})
    assert r.group_map({"motion": [1, 2], "social": [3]}) == {"motion": pytest.approx(0.2), "social": pytest.approx(0.6)}
    js = r.to_json({"motion": [1, 2]})
    assert js == {"mAP": 0.5, "per_class": {"1": 0.2, "2": None, "3": 0.6}, "groups": {"motion": 0.2}}


def test_cli_json_and_plots(tmp_path):
    gt = tmp_path / "gt.csv"
    # class 1 (pose) and 17 (person-object): two boxes each on one keyframe
    gt.write_text("v,0902,0.0,0.0,0.5,0.5,1,0\nv,0902,0.5,0.5,1.0,1.0,1,1\nv,0902,0.0,0.0,0.5,0.5,17,0\n")
    pred = tmp_path / "p.csv"
    pred.write_text("v,902,0.0,0.0,0.5,0.45,1,0.9\nv,902,0.0,0.0,0.25,0.25,1,0.8\nv,902,0.5,0.5,1.0,1.0,1,0.7\n"
                    "v,902,0.5,0.5,1.0,1.0,17,0.9\n")
    out = tmp_path / "res" / "eval.json"
    res = CliRunner().invoke(evaluate_cli, ["--gt", str(gt), "--pred", str(pred), "--json", str(out),
                                            "--plots", str(tmp_path / "plots"), "--plot-by", "group"])
    assert res.exit_code == 0, res.output
    assert "frame-mAP@0.5" in res.output and "pose" in res.output and "bend/bow" in res.output
    js = json.loads(out.read_text())
    ap1 = 0.5 + 0.5 * 2 / 3
    assert js["mAP"] == pytest.approx(ap1 / 2)  # class 17: FP then nothing -> AP 0
    assert js["per_class"]["1"] == pytest.approx(ap1) and js["per_class"]["17"] == 0.0
    assert js["per_class"]["80"] is None
    assert js["groups"]["pose"] == pytest.approx(ap1) and js["groups"]["person-object"] == 0.0
    assert js["groups"]["person-person"] is None
    assert (out.parent / "evaluate_config.json").exists()
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["group_person-object.png", "group_person-person.png", "group_pose.png"]
    assert (tmp_path / "plots" / "group_pose.png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(evaluate_cli, ["--gt", str(gt), "--pred", str(pred), "--iou", "1.5"])
    assert bad.exit_code != 0 and "--iou" in bad.output


def test_plot_per_class(tmp_path):
    r = fm(BASE_GT, BASE_DET, class_ids=[1, 2], keep_curves=True)
    p, rec = r.curves[1]
    np.testing.assert_allclose(p, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(rec, [0.5, 0.5, 1])
    files = plot_pr_curves(r, tmp_path, by="class")
    assert [f.split("/")[-1] for f in files] == ["class_001.png"]
