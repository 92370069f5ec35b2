"""AVA frame-mAP: hand-computed APs for each point of the official protocol, files and CLI.

Randomized comparisons with the structural references: test_evaluate_random.py; bad files:
test_evaluate_files.py."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from stagecache.extract import ava_io
from stagecache.pipelines.commands.evaluate import evaluate_cli
from stagecache.pipelines.evaluation.ava import (DEFAULT_LABEL_MAP, EvalResult, class_groups, evaluate_files, frame_map,
                                frame_map_single_label, plot_pr_curves)

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


# ----------------------------------------------------------------------------- the hand cases

FILL = [0.0, 0.0, 0.1, 0.1]  # filler detections of class 2 (no GT)


def test_empty_box_takes_its_place_in_the_cap():
    # 49 fillers at 0.9, an empty class-1 box (x1 == x2) at 0.95, the good class-1 box at 0.5: the heap keeps
    # the 50 best (empty box included), then the empty box is dropped. The good box never made the cap: AP 0.
    gt = [(1, A, 1)]
    det = [(1, FILL, 2, 0.9)] * 49 + [(1, [0.2, 0.0, 0.2, 0.5], 1, 0.95), (1, A, 1, 0.5)]
    assert fm(gt, det).per_class[1] == 0.0
    # dropping empty boxes before the cap would have kept it (AP 1): check that this is what differs
    assert fm(gt, det[:49] + det[50:]).per_class[1] == 1.0


def test_best_gt_taken_is_fp_even_if_another_box_matches():
    # GT A and A_LOW. A (0.9) takes A. A_NEAR (0.8): IoU 0.9 with A (taken), 0.727 with A_LOW (free, >= 0.5):
    # FP, no fall back. Ranked TP, FP over 2 GT -> precision 1 at recall 1/2 -> AP 0.5.
    gt = [(1, A, 1), (1, A_LOW, 1)]
    assert fm(gt, [(1, A, 1, 0.9), (1, A_NEAR, 1, 0.8)], class_ids=[1]).per_class[1] == 0.5


def test_ties_in_score_across_keyframes_follow_the_official_argsort():
    # class 1 scores concatenated in keyframe first-appearance order: [0.5 (kf 2, FP), 0.5 (kf 1, TP)].
    # Official ranking = np.argsort(scores)[::-1]; numpy's sort puts the tie as [0, 1], reversed [1, 0]:
    # the TP first -> AP 1 (a stable descending sort would put the FP first -> AP 0.5).
    gt = [(1, A, 1)]
    det = [(2, A, 1, 0.5), (1, A, 1, 0.5)]
    order = np.argsort(np.array([0.5, 0.5]))[::-1]
    want = 1.0 if order[0] == 1 else 0.5
    assert fm(gt, det, class_ids=[1]).per_class[1] == want
    # same rows, keyframe 1 first in the file: [TP, FP] -> reversed argsort puts the FP first -> AP 1/2
    assert fm(gt, det[::-1], class_ids=[1]).per_class[1] == (1.0 if order[0] == 0 else 0.5)


def test_ties_at_the_50th_place_of_the_cap():
    gt = [(1, A, 1), (1, B, 3)]
    top = [(1, FILL, 2, 0.9)] * 49
    # s* = 0.5 with one place left; candidates are the rows scoring >= 0.5 among the first 50 such rows.
    # class 1 row is the 50th such row, class 3 the 51st: only class 1 can be kept -> AP(1) 1, AP(3) 0
    r = fm(gt, top + [(1, A, 1, 0.5), (1, B, 3, 0.5)], class_ids=[1, 2, 3])
    assert (r.per_class[1], r.per_class[3]) == (1.0, 0.0)
    r = fm(gt, top + [(1, B, 3, 0.5), (1, A, 1, 0.5)], class_ids=[1, 2, 3])  # the other way round
    assert (r.per_class[1], r.per_class[3]) == (0.0, 1.0)
    # both first in the file: both candidates; the heap evicts the smaller tuple (0.5, 1, ...) < (0.5, 3, ...)
    r = fm(gt, [(1, A, 1, 0.5), (1, B, 3, 0.5)] + top, class_ids=[1, 2, 3])
    assert (r.per_class[1], r.per_class[3]) == (0.0, 1.0)
    # same class, same score: tuples compare y1 next; B (y1 0.5) > A (y1 0): A is evicted, GT B matched
    r = fm([(1, B, 1)], [(1, A, 1, 0.5), (1, B, 1, 0.5)] + top, class_ids=[1, 2])
    assert r.per_class[1] == 1.0 and r.num_det[1] == 1


def test_duplicate_gt_rows_are_two_boxes():
    # two identical GT rows: two GT boxes (num_gt 2), but every detection's argmax is the first of them, so
    # the second copy can never be matched: TP then FP -> precision 1 at recall 1/2 -> AP 1/2
    gt = [(1, A, 1), (1, A, 1)]
    r = fm(gt, [(1, A, 1, 0.9), (1, A, 1, 0.8)], class_ids=[1])
    assert r.num_gt[1] == 2 and r.per_class[1] == 0.5
    assert fm(gt[:1], [(1, A, 1, 0.9), (1, A, 1, 0.8)], class_ids=[1]).per_class[1] == 1.0  # one GT row: AP 1


def test_float64_scores_that_share_a_float32():
    # 0.30000001 and 0.3 are one float32 but two float64 values
    assert np.float32(0.30000001) == np.float32(0.3) and 0.30000001 > 0.3
    gt = [(2, B, 1), (1, A, 1)]  # GT file lists keyframe 2 first
    det = [(2, A, 1, 0.30000001), (1, A, 1, 0.3)]  # kf 2: FP (A vs B: IoU 0); kf 1: TP
    # official (float64): FP ranks first -> precision 0, 1/2 at recall 0, 1/2 -> AP 1/4
    assert fm(gt, det, class_ids=[1]).per_class[1] == 0.25
    # MMAction2 (float32 scores): a tie; its concatenation follows the GT keyframes [kf 2 FP, kf 1 TP],
    # reversed argsort of the tie -> [TP, FP] -> AP 1/2 (when numpy orders the tie [0, 1])
    tie_first = np.argsort(np.array([0.3, 0.3], np.float32))[::-1][0]
    assert fm(gt, det, class_ids=[1], protocol="mmaction2").per_class[1] == (0.5 if tie_first == 1 else 0.25)


def test_iou_boundary_is_inclusive():
    gt = [(1, [0.0, 0.0, 1.0, 1.0], 1)]
    assert fm(gt, [(1, [0.0, 0.0, 0.5, 1.0], 1, 0.9)], class_ids=[1]).per_class[1] == 1.0  # IoU exactly 0.5
    below = np.nextafter(1.0, 0.0)
    assert fm(gt, [(1, [0.0, 0.0, 0.5, below], 1, 0.9)], class_ids=[1]).per_class[1] == 0.0  # IoU < 0.5


def test_gt_order_decides_equal_iou_ties():
    # det D has IoU 0.5 with both G1 and G2 (class 1, one keyframe); the official GT order is the heap order
    # of (1.0, class, y1, x1, y2, x2): G2 (y1 -0.25) sits before G1 (y1 0.25) whatever the file order, so D takes
    # G2, and E (which only overlaps G2 enough) is then a FP. Ranked D TP, E FP over 2 GT -> AP 1/2.
    g1, g2 = [0.0, 0.25, 1.0, 1.25], [0.0, -0.25, 1.0, 0.75]
    d = [0.0, 0.0, 1.0, 1.0]  # IoU(d, g1) = IoU(d, g2) = 0.75 / 1.25 = 0.6
    e = [0.0, -0.25, 1.0, 0.7]  # IoU(e, g2) = 0.95 / 1.0 = 0.95, IoU(e, g1) = 0.45 / 1.5 < 0.5
    for gt in ([(1, g1, 1), (1, g2, 1)], [(1, g2, 1), (1, g1, 1)]):
        assert fm(gt, [(1, d, 1, 0.9), (1, e, 1, 0.8)], class_ids=[1]).per_class[1] == 0.5
    # PySlowFast keeps the GT file order: with G1 first, D takes G1 and E takes G2 -> AP 1
    r = fm([(1, g1, 1), (1, g2, 1)], [(1, d, 1, 0.9), (1, e, 1, 0.8)], class_ids=[1], protocol="pyslowfast")
    assert r.per_class[1] == 1.0


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
