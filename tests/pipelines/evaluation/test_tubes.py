"""pipelines/evaluation/tubes.py on hand-computed cases (the ACT / MOC protocol's arithmetic, worked by hand)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from stagecache.extract import ava_io
from stagecache.extract.datasets.tubes_pkl import TubeFormatError, TubeGT, frame_timestamp
from stagecache.extract.synthetic.tubes import write_py2_pickle
from stagecache.pipelines.evaluation.tubes import TubeEvalArgs, TubeEvalError, evaluate_split, run_tube_eval
from stagecache.pipelines.evaluation.tubes_link import TUBE_PROTOCOLS, link_video_class
from stagecache.pipelines.evaluation.tubes_ops import iou2d as iou_px, iou3dt as tube_iou, link_candidates, pr_to_ap

MOC = TUBE_PROTOCOLS["moc"]


def average_precision(is_tp, n_gt):
    return pr_to_ap(is_tp, n_gt)


def link_tubes(frames, boxes, scores, *, min_length, stride=1, nframes=None):
    d = {int(f): (np.asarray(b, np.float32), np.asarray(s, np.float32)) for f, b, s in zip(frames, boxes, scores)}
    return link_video_class(d, nframes or int(max(frames)), MOC, stride=stride, min_length=min_length)

H, W = 100, 200  # every video's (height, width)
P = [10, 10, 29, 29]  # 20 x 20 pixel boxes (+1 convention)
Q = [100, 50, 119, 69]
FAR = [160, 70, 179, 89]


def tube(frames, box):
    return np.array([[f, *box] for f in frames], np.float64)


def make_gt(videos_tubes: dict, test: list[list[str]], labels=("jump", "run", "wave")) -> TubeGT:
    n = {v: 12 for v in videos_tubes}
    return TubeGT("mem.pkl", list(labels), videos_tubes, n, [[]] * len(test), test, {v: (H, W) for v in n})


def preds(rows):
    """rows: (video, frame, pixel box, label index, score) -> Predictions (normalised, timestamps at 30 fps)."""
    s = np.array([W, H, W, H], np.float64)
    return ava_io.Predictions(video=np.array([r[0] for r in rows], dtype=object),
                              timestamp=frame_timestamp([r[1] for r in rows], 30.0),
                              box=np.array([np.array(r[2]) / s for r in rows], np.float32).reshape(-1, 4),
                              action=np.array([r[3] + 1 for r in rows], np.int64),
                              score=np.array([r[4] for r in rows], np.float32))


def test_iou_plus_one_convention_and_trapezoid_ap():
    # [0,9] x [0,9] vs [5,14] x [0,9]: 100 px each, 50 shared -> 50 / 150
    assert iou_px(np.array([[0, 0, 9, 9.0]]), np.array([5, 0, 14, 9.0]))[0] == pytest.approx(1 / 3)
    # TP, FP, TP with 2 GT: (p, r) = (1, 0), (1, .5), (.5, .5), (2/3, 1)
    assert average_precision(np.array([True, False, True]), 2) == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
    assert average_precision(np.zeros(0, bool), 3) == 0.0  # a class without detections
    assert average_precision(np.array([False, True]), 1) == pytest.approx(1.0 * (0.5 + 0.0) / 2)


def test_frame_map_overlapping_gt_tubes_duplicates_and_a_class_without_detections():
    gt = make_gt({"jump/v1": [(0, tube(range(1, 5), P))],
                  "run/v2": [(1, tube(range(1, 4), P)), (1, tube(range(2, 5), Q))],  # overlap at frames 2-3
                  "wave/v3": [(2, tube([1, 2], P))]}, [["jump/v1", "run/v2", "wave/v3"]])
    rows = [("jump/v1", f, P, 0, s) for f, s in zip(range(1, 5), (0.9, 0.8, 0.7, 0.6))]
    rows += [("jump/v1", 2, FAR, 0, 0.85),  # a false positive between the TPs
             ("jump/v1", 1, P, 0, 0.5)]  # a duplicate of frame 1's TP: FP
    rows += [("run/v2", f, P, 1, 0.9) for f in (1, 2, 3)] + [("run/v2", f, Q, 1, 0.8) for f in (2, 3, 4)]
    r = evaluate_split(gt, 1, preds(rows), fps=30.0, min_tube_length=1)
    # jump: TP FP TP TP TP FP over 4 GT -> (p, r): (1,.25) (.5,.25) (2/3,.5) (.75,.75) (.8,1) (4/6,1)
    ap_jump = 0.25 * (1 + 1) / 2 + 0.25 * (0.5 + 2 / 3) / 2 + 0.25 * (2 / 3 + 0.75) / 2 + 0.25 * (0.75 + 0.8) / 2
    assert r.frame_ap[0] == pytest.approx(ap_jump)
    assert r.frame_ap[1] == pytest.approx(1.0)  # both overlapping tubes found at every frame
    assert r.frame_ap[2] == 0.0  # no detection of "wave"
    assert r.frame_map == pytest.approx((ap_jump + 1.0 + 0.0) / 3)
    # video level: run's two overlapping GT tubes are linked separately and both found
    for t in (0.2, 0.5, 0.75):
        assert r.video_ap[t][1] == pytest.approx(1.0) and r.video_ap[t][2] == 0.0


def test_video_map_of_a_tube_detected_with_a_gap():
    # GT frames 1-10; the detector loses the person at frames 5-6 (box elsewhere): the linking
    # breaks the tube into 1-4, 5-6 (elsewhere) and 7-10.
    gt = make_gt({"jump/v1": [(0, tube(range(1, 11), P))]}, [["jump/v1"]], labels=("jump",))
    rows = [("jump/v1", f, P, 0, 0.9) for f in range(1, 5)] + [("jump/v1", f, FAR, 0, 0.7) for f in (5, 6)]
    rows += [("jump/v1", f, P, 0, 0.8) for f in range(7, 11)]
    r = evaluate_split(gt, 1, preds(rows), fps=30.0, min_tube_length=1)
    # each part overlaps GT for 4 of 10 frames with IoU 1: ST-IoU 0.4. At 0.2 the best one is a TP,
    # the others FP: (p, r) = (1, 1), (.5, 1), (1/3, 1) -> AP 1. At 0.5 and 0.75 none is a TP.
    assert r.video_ap[0.2][0] == pytest.approx(1.0)
    assert r.video_ap[0.5][0] == 0.0 and r.video_ap[0.75][0] == 0.0
    # with min_tube_length 5 (ACT uses 15) all three parts are dropped
    short = evaluate_split(gt, 1, preds(rows), fps=30.0, min_tube_length=5)
    assert short.video_ap[0.2][0] == 0.0


def test_frame_ap_of_the_gap_case_by_hand():
    gt = make_gt({"jump/v1": [(0, tube(range(1, 11), P))]}, [["jump/v1"]], labels=("jump",))
    rows = [("jump/v1", f, P, 0, 0.9) for f in range(1, 5)] + [("jump/v1", f, FAR, 0, 0.7) for f in (5, 6)]
    rows += [("jump/v1", f, P, 0, 0.8) for f in range(7, 11)]
    r = evaluate_split(gt, 1, preds(rows), fps=30.0, min_tube_length=1)
    # 8 TPs (recall .1 ... .8, precision 1) then 2 FPs (no recall gain): AP = 0.8
    assert r.frame_ap[0] == pytest.approx(0.8)


def test_spatio_temporal_iou_by_hand():
    a = tube(range(1, 11), [0, 0, 9, 9])
    b = tube(range(3, 13), [5, 0, 14, 9])  # per-frame IoU 1/3; temporal 8 (3..10) / 12 (1..12)
    assert tube_iou(a, b) == pytest.approx(8 / 12 / 3)
    assert tube_iou(a, tube(range(11, 14), [0, 0, 9, 9])) == 0.0
    gap = np.delete(a, [4, 5], axis=0)  # frames 5 and 6 missing: IoU 0 there
    assert tube_iou(gap, a) == pytest.approx(8 / 10)


def test_soft_nms_rescores_overlaps():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 8], [50, 50, 59, 59]], np.float64)  # IoU(0, 1) = 0.9
    b, s = link_candidates(boxes.astype(np.float32), np.array([0.9, 0.8, 0.5], np.float32), "soft", 0.6, 10)
    assert s.tolist() == pytest.approx([0.9, 0.5, 0.8 * (1 - 0.9)], rel=1e-6)
    assert b[2].tolist() == [0, 0, 9, 8]


def test_linking_known_answer():
    # two people A (moving right 1 px/frame, score .9) and B (still, .6) over frames 1-6; at frame 4
    # A's box jumps away (IoU 0 with frame 3): A's tube ends at 3, a new one starts at 4.
    # A spurious box at frame 3 (score .3) starts a 1-frame tube.
    frames = np.arange(1, 7)
    a = {f: [f, 0, f + 19, 19] for f in (1, 2, 3)} | {f: [100 + f, 60, 119 + f, 79] for f in (4, 5, 6)}
    b = [50, 0, 69, 19]
    boxes, scores = [], []
    for f in frames:
        bx, sc = [a[f], b], [0.9, 0.6]
        if f == 3:
            bx, sc = bx + [[150, 0, 169, 19]], sc + [0.3]
        boxes.append(np.array(bx, np.float64))
        scores.append(np.array(sc))
    tubes = link_tubes(frames, boxes, scores, min_length=1)
    spans = sorted((int(t[0, 0]), int(t[-1, 0]), round(float(s), 6)) for t, s in tubes)
    assert spans == [(1, 3, 0.9), (1, 6, 0.6), (3, 3, 0.3), (4, 6, 0.9)]
    b_tube = next(t for t, s in tubes if t[0, 0] == 1 and t[-1, 0] == 6)
    assert (b_tube[:, 1:5] == np.array(b)).all()
    assert sorted((int(t[0, 0]), int(t[-1, 0])) for t, _ in link_tubes(frames, boxes, scores, min_length=3)) == \
        [(1, 3), (1, 6), (4, 6)]
    # keyframes every 2 frames: a keyframe's box holds over its 2 frames (a K = 2 tubelet)
    t2 = link_tubes(np.array([1, 3]), [np.array([[0, 0, 19, 19.0]]), np.array([[4, 0, 23, 19.0]])],
                    [np.array([0.5]), np.array([0.7])], min_length=1, stride=2, nframes=4)
    assert len(t2) == 1 and t2[0][1] == pytest.approx(0.6)
    assert t2[0][0][:, :5].tolist() == [[1, 0, 0, 19, 19], [2, 0, 0, 19, 19], [3, 4, 0, 23, 19], [4, 4, 0, 23, 19]]


def _three_split_pickle(path):
    tubes = {f"jump/v{i}": {0: [tube(range(1, 7), P).astype(np.float32)]} for i in range(3)}
    write_py2_pickle(path, {"labels": ["jump", "run"], "gttubes": tubes, "nframes": {v: 6 for v in tubes},
                            "train_videos": [[], [], []], "test_videos": [[f"jump/v{i}"] for i in range(3)],
                            "resolution": {v: (H, W) for v in tubes}})


def test_mean_over_three_splits_and_the_command(tmp_path):
    gt_path = tmp_path / "JHMDB-GT.pkl"
    _three_split_pickle(gt_path)
    paths = []
    for i, good in enumerate((6, 3, 0)):  # split i detects `good` of 6 frames
        rows = [(f"jump/v{i}", f, P if f <= good else FAR, 0, 0.9) for f in range(1, 7)]
        p = tmp_path / f"split{i + 1}.csv"
        ava_io.write_predictions(p, preds(rows))
        paths.append(str(p))
    out = run_tube_eval(TubeEvalArgs("jhmdb", str(gt_path), paths, [1, 2, 3], min_tube_length=1), echo=lambda s: None)
    # class "jump" only (run has no test GT): frame AP of split 2 = TP TP TP FP FP FP (all .9, file order) -> .5
    assert [r["frame_mAP"] for r in out["runs"]] == pytest.approx([1.0, 0.5, 0.0])
    assert out["mean"]["frame_mAP"] == pytest.approx(0.5)
    from stagecache.pipelines.commands.evaluate import evaluate_cli

    res = CliRunner().invoke(evaluate_cli, ["--dataset", "jhmdb", "--gt", str(gt_path), "--pred", paths[0],
                                            "--pred", paths[1], "--pred", paths[2], "--split", "1", "--split", "2",
                                            "--split", "3", "--min-tube-length", "1",
                                            "--json", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    assert "mean over splits [1, 2, 3]: frame-mAP 50.00" in res.output
    assert (tmp_path / "m.json").exists()
    with pytest.raises(TubeEvalError, match="split1.csv.*not test videos"):  # split 1's file given as split 2
        run_tube_eval(TubeEvalArgs("jhmdb", str(gt_path), [paths[0]], [2]), echo=lambda s: None)
    with pytest.raises(ValueError, match="one split per predictions file"):
        TubeEvalArgs("jhmdb", str(gt_path), paths, [1])


def test_a_tube_broken_by_an_empty_frame():
    # GT 1-10; detections at 1-4 (.9) and 6-10 (.8), frame 5 has no row at all: the walk visits
    # frame 5, the tube finds no match there and ends (MOC); 1-4 (ST-IoU .4) and 6-10 (.5) remain.
    gt = make_gt({"jump/v1": [(0, tube(range(1, 11), P))]}, [["jump/v1"]], labels=("jump",))
    rows = [("jump/v1", f, P, 0, 0.9) for f in range(1, 5)] + [("jump/v1", f, P, 0, 0.8) for f in range(6, 11)]
    r = evaluate_split(gt, 1, preds(rows), fps=30.0, min_tube_length=1)
    spans = sorted((int(t[0, 0]), int(t[-1, 0])) for t, _ in r.tubes[("jump/v1", 0)])
    assert spans == [(1, 4), (6, 10)]
    assert r.video_ap[0.2][0] == pytest.approx(1.0)  # 1-4 TP, 6-10 FP (GT taken)
    assert r.video_ap[0.5][0] == pytest.approx(0.25)  # 1-4 FP (.4), 6-10 TP (.5): (0, 0), (.5, 1)
    # ACT keeps a tube alive 5 frames: one tube 1-10 whose frame 5 has no box (0 / 0 in the reference)
    a = evaluate_split(gt, 1, preds(rows), fps=30.0, min_tube_length=1, protocol="act")
    [(t, _)] = a.tubes[("jump/v1", 0)]
    assert len(t) == 10 and np.isnan(t[4, 1:5]).all()


@pytest.mark.parametrize("protocol", ["moc", "act"])
def test_duplicates_only_the_frame_nms_removes(protocol):
    gt = make_gt({"jump/v1": [(0, tube([1, 2], P))]}, [["jump/v1"]], labels=("jump",))
    rows = [("jump/v1", 1, P, 0, 0.9), ("jump/v1", 1, P, 0, 0.8), ("jump/v1", 2, P, 0, 0.5)]
    r = evaluate_split(gt, 1, preds(rows), fps=30.0, min_tube_length=1, protocol=protocol)
    # without the NMS: TP, FP (the duplicate), TP -> .7917; with it the duplicate scores 0 (MOC) or is gone (ACT)
    assert r.frame_ap[0] == pytest.approx(1.0)


def test_a_jhmdb_pickle_refused_as_ucf24_and_the_command_options(tmp_path):
    gt_path = tmp_path / "JHMDB-GT.pkl"
    _three_split_pickle(gt_path)
    p = tmp_path / "split1.csv"
    ava_io.write_predictions(p, preds([("jump/v0", f, P, 0, 0.9) for f in range(1, 7)]))
    with pytest.raises(TubeFormatError, match=r"JHMDB-GT.pkl: has 3 split\(s\), like a jhmdb pickle; --dataset ucf24"):
        run_tube_eval(TubeEvalArgs("ucf24", str(gt_path), [str(p)], [1]), echo=lambda s: None)
    from stagecache.pipelines.commands.evaluate import evaluate_cli

    out = tmp_path / "tubes.json"
    res = CliRunner().invoke(evaluate_cli, ["--dataset", "jhmdb", "--gt", str(gt_path), "--pred", str(p),
                                            "--min-tube-length", "1", "--video-iou", "0.3,0.6", "--protocol", "act",
                                            "--tubes-out", str(out)])
    assert res.exit_code == 0, res.output
    assert "protocol act" in res.output and "video-mAP@0.3 100.00  video-mAP@0.6 100.00" in res.output
    assert "video-mAP@0.5:0.95 100.00" in res.output and "  jump " in res.output  # the per-class table
    doc = json.loads(out.read_text())
    assert doc["format"] == "stagecache-tubes/1" and doc["labels"] == ["jump", "run"]
    [t] = doc["runs"][0]["tubes"]
    assert t["video"] == "jump/v0" and t["label"] == 0 and len(t["boxes"]) == 6 and t["boxes"][0][:5] == [1, *P]
    bad = CliRunner().invoke(evaluate_cli, ["--dataset", "jhmdb", "--gt", str(gt_path), "--pred", str(p),
                                            "--protocol", "official"])
    assert bad.exit_code != 0 and "not one for --dataset jhmdb" in bad.output
