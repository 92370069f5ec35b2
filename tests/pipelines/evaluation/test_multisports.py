"""pipelines/evaluation/multisports*.py: MultiSports' frame-AP and video-AP against the test-side
reference (multisports_reference.py, in evaluate_multisports.py's structure) on random cases, hand
cases of its matching and AP, the CLI, and bad input."""
import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stagecache.core.errors import UserError
from stagecache.extract import ava_io
from stagecache.extract.datasets.multisports import read_multisports_gt
from stagecache.extract.datasets.tubes_pkl import TubeFormatError, TubeGT
from stagecache.extract.synthetic.multisports import multisports_gt, noisy_predictions
from stagecache.pipelines.evaluation.multisports import VIDEO_IOUS_ALL, evaluate_multisports, frame_ap
from stagecache.pipelines.evaluation.multisports_link import link_all
from stagecache.pipelines.evaluation.multisports_ops import iou3dt_voc, voc_ap
from stagecache.pipelines.evaluation.tubes_frame import TubeEvalError, frame_dets
from tests.pipelines.evaluation import multisports_reference as ref


def _read(tmp_path, gt: dict, name="gt.pkl") -> TubeGT:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(gt))
    return read_multisports_gt(path)


def _close(a, b):
    torch.testing.assert_close(torch.as_tensor(np.asarray(a, np.float64)), torch.as_tensor(np.asarray(b, np.float64)),
                               atol=1e-9, rtol=0)


def _per_class(res_ap, labels, ref_ap: dict):
    """Ours (NaN where not evaluated) against the reference's {label: AP} dict."""
    mine = {labels[c]: res_ap[c] for c in range(len(labels)) if not np.isnan(res_ap[c])}
    assert sorted(mine) == sorted(ref_ap)
    _close([mine[k] for k in sorted(mine)], [ref_ap[k] for k in sorted(ref_ap)])


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_equal_the_reference(tmp_path, seed):
    # ties (scores on a 0.1 grid for some seeds), several people with overlapping tubes of several
    # classes, tubes starting / ending inside the video, missed boxes, false positives and wrong classes
    gt = multisports_gt(seed, videos_per_sport=4, tube_dtype=np.float32 if seed % 2 else np.float64)
    pred = noisy_predictions(gt, seed, jitter=0.8, miss=[0.0, 0.03, 0.25][seed % 3], score_grid=[0.1, 0.01][seed % 2])
    g = _read(tmp_path, gt)
    assert g.tubes[g.test_videos[0][0]][0][1].dtype == (np.float32 if seed % 2 else np.float64)  # kept as written
    res = evaluate_multisports(g, pred)
    videos = g.videos("test", 1)
    det = frame_dets(g, videos, pred, fps=25.0, source="p")
    alldets = np.column_stack([det.vidx, det.frame, det.label, det.score, det.box]).astype(np.float64)

    _per_class(res.frame_ap, g.labels, ref.frame_ap(gt, alldets, 0.5))
    _close(res.frame_map, np.mean(list(ref.frame_ap(gt, alldets, 0.5).values())))

    ref_tubes = ref.link_tubes(gt, alldets)
    ours = link_all(det, g.nframes, videos, len(g.labels))
    for c in ref_tubes:
        assert [(v, float(s)) for v, s, _ in ours[c]] == [(v, float(s)) for v, s, _ in ref_tubes[c]]
        for (_, _, a), (_, _, b) in zip(ours[c], ref_tubes[c]):
            assert a.dtype == np.float32 and np.array_equal(a, b)
    for t in (0.2, 0.5):
        _per_class(res.video_ap[t], g.labels, ref.video_ap(gt, ref_tubes, t))
    _close(res.video_map_all, ref.video_ap_all(gt, ref_tubes))
    assert np.isnan(res.frame_ap[g.labels.index("basketball save")])  # a class MultiSports does not evaluate
    if seed % 3 == 0:  # nothing missed: real tubes are linked and matched
        assert res.video_map(0.5) > 0


def _case():
    # one test video, 20 frames, 100 x 100; class 0 has two GT tubes, class 1 one
    a = np.array([[f, 10, 10, 30, 30] for f in range(1, 21)], np.float64)
    b = np.array([[f, 12, 12, 32, 32] for f in range(1, 21)], np.float64)  # overlaps a
    c = np.array([[f, 60, 60, 90, 90] for f in range(5, 21)], np.float64)
    return {"labels": ["x", "y", "basketball save"], "gttubes": {"s/v1": {0: [a, b], 1: [c]}, "s/v2": {}},
            "nframes": {"s/v1": 20, "s/v2": 20}, "train_videos": [["s/v2"]], "test_videos": [["s/v1"]],
            "resolution": {"s/v1": (100, 100), "s/v2": (100, 100)}}


def _preds(rows):
    return ava_io.Predictions(video=np.array([r[0] for r in rows], str),
                              timestamp=np.array([(r[1] - 1) / 25.0 for r in rows]),
                              box=np.array([np.array(r[2]) / 100.0 for r in rows]).reshape(-1, 4),
                              action=np.array([r[3] + 1 for r in rows]), score=np.array([r[4] for r in rows]))


def test_matching_takes_the_best_gt_even_if_taken_and_voc_area(tmp_path):
    g = _read(tmp_path, _case())
    # frame 1, class 0: the first detection takes tube a's box; the second is closest to a too
    # (IoU 1 with a, 0.68 with b): a false positive, though b is free (ACT would give it b)
    p = _preds([("s/v1", 1, [10, 10, 30, 30], 0, 0.9), ("s/v1", 1, [10, 10, 30, 30], 0, 0.8),
                ("s/v1", 2, [12, 12, 32, 32], 0, 0.7)])
    det = frame_dets(g, g.videos("test", 1), p, fps=25.0, source="p")
    ap = frame_ap(g, g.videos("test", 1), det)
    # 40 GT boxes of class 0; (p, r): (1, 1/40), (1/2, 1/40), (2/3, 2/40) -> VOC: 1/40 * 1 + 1/40 * 2/3
    assert ap[0] == pytest.approx(1 / 40 + (1 / 40) * (2 / 3))
    assert ap[1] == 0.0 and np.isnan(ap[2])  # no detections; not evaluated
    assert voc_ap(np.array([True, False, True]), 4) == pytest.approx(0.25 + 0.25 * 2 / 3)
    assert voc_ap(np.zeros(0, bool), 3) == 0.0


def test_temporal_iou_has_no_plus_one():
    t1 = np.array([[f, 0, 0, 10, 10] for f in range(1, 11)], np.float64)  # frames 1..10
    t2 = np.array([[f, 0, 0, 10, 10] for f in range(6, 16)], np.float32)  # 6..15
    # shared 6..10: (10 - 6) / (15 - 1) = 4 / 14 (ACT: 5 / 15), boxes identical
    assert iou3dt_voc(t1, t2) == pytest.approx(4 / 14)
    assert iou3dt_voc(t1, t2[5:]) == 0.0  # 11..15: disjoint


def test_video_ap_links_and_matches_full_tubes(tmp_path):
    g = _read(tmp_path, _case())
    rows = [("s/v1", f, [60, 60, 90, 90], 1, 0.9) for f in range(5, 21)]  # one tube over c
    rows += [("s/v1", f, [10, 10, 30, 30], 0, 0.8) for f in range(1, 21)]  # a
    res = evaluate_multisports(g, _preds(rows))
    assert res.video_ap[0.5][1] == 1.0 and res.video_ap[0.5][0] == 0.5  # class 0: one of two GT tubes
    assert res.video_map(0.5) == pytest.approx(0.75)


def test_cli_writes_json(tmp_path):
    from stagecache.pipelines.commands.cli import main

    gt = multisports_gt(1, videos_per_sport=3)
    (tmp_path / "gt.pkl").write_bytes(pickle.dumps(gt))
    ava_io.write_predictions(tmp_path / "pred.csv", noisy_predictions(gt, 1, jitter=0.8, miss=0.0))
    r = CliRunner().invoke(main, ["evaluate", "--dataset", "multisports", "--gt", str(tmp_path / "gt.pkl"),
                                  "--pred", str(tmp_path / "pred.csv"), "--json", str(tmp_path / "o.json")])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "o.json").read_text())
    assert set(out["video_mAP"]) == {"0.2", "0.5", "0.1:0.9"} and "video-mAP@0.1:0.9" in r.output
    assert out["per_class_frame_AP"]["basketball save"] is None
    assert len(VIDEO_IOUS_ALL) == 9


def test_bad_inputs_one_line_errors(tmp_path):
    gt = _case()
    gt["gttubes"]["s/v1"][1][0] = np.array([[f, 60, 60, 90, 90] for f in range(5, 23)], np.float64)  # 21, 22 > 20
    with pytest.raises(TubeFormatError, match=r"gt\.pkl: video s/v1: tube 0 of label 1: .* 1\.\.20"):
        _read(tmp_path, gt)
    data = pickle.dumps(_case())
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.pkl"):
        read_multisports_gt(tmp_path / "cut.pkl")

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"labels": Boom()}))
    with pytest.raises(UserError, match="evil.pkl") as e:
        read_multisports_gt(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists() and "\n" not in str(e.value)
    from stagecache.pipelines.commands.cli import main

    ava_io.write_predictions(tmp_path / "p.csv", _preds([("s/v1", 1, [0, 0, 5, 5], 0, 0.5)]))
    for bad in ("cut.pkl", "evil.pkl"):  # through the command: one line, exit 1
        r = CliRunner().invoke(main, ["evaluate", "--dataset", "multisports", "--gt", str(tmp_path / bad),
                                      "--pred", str(tmp_path / "p.csv")])
        assert r.exit_code == 1 and r.output.startswith("Error: ") and bad in r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
    g = _read(tmp_path, _case())
    with pytest.raises(TubeEvalError, match="s/v2"):  # a train video in the predictions
        evaluate_multisports(g, _preds([("s/v2", 1, [0, 0, 5, 5], 0, 0.5)]))
