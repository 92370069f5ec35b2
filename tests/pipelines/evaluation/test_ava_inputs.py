"""What `evaluate` checks in its files before scoring (pipelines/evaluation/ava_inputs.py), where it
departs from the official evaluator and where it keeps to it, and the PR plots' titles."""
from __future__ import annotations

import pytest

from stagecache.extract.ava_io import AvaFormatError
from stagecache.pipelines.evaluation.ava import (DEFAULT_LABEL_MAP, EvaluateArgs, evaluate_files, plot_pr_curves,
                                                 run_evaluate)
from stagecache.pipelines.evaluation.ava_inputs import GroupsFileError, read_groups_file

GT = "v,0902,0.0,0.0,0.5,0.5,1\n"


def _write(d, name, text):
    (d / name).write_text(text)
    return str(d / name)


def test_an_empty_predicted_box_is_still_dropped_as_the_official_evaluator_drops_it(tmp_path):
    # x1 == x2: the official evaluator's _remove_invalid_boxes drops it (after the 50-row cap); only a
    # strictly inverted box (x2 < x1) is refused, with its line
    gt = _write(tmp_path, "gt.csv", GT)
    pred = _write(tmp_path, "p.csv", "v,0902,0.3,0.0,0.3,0.5,1,0.9\nv,0902,0.0,0.0,0.5,0.5,1,0.8\n")
    assert evaluate_files(gt, pred).per_class[1] == 1.0  # the empty box is no false positive
    bad = _write(tmp_path, "bad.csv", "v,0902,0.0,0.0,0.5,0.5,1,0.8\nv,0902,0.0,0.6,0.5,0.5,1,0.9\n")
    with pytest.raises(AvaFormatError, match=r"bad.csv:2: inverted box x1=0, y1=0.6, x2=0.5, y2=0.5"):
        evaluate_files(gt, bad)


def test_gt_coordinates_on_the_frame_edges_pass_and_outside_them_are_refused(tmp_path):
    pred = _write(tmp_path, "p.csv", "v,0902,0.0,0.0,1.0,1.0,1,0.9\n")
    assert evaluate_files(_write(tmp_path, "gt.csv", "v,0902,0.0,0.0,1.0,1.0,1\n"), pred).per_class[1] == 1.0
    gt = _write(tmp_path, "gt2.csv", "v,0902,0.0,0.0,1.0,1.0,1\nv,0903,-0.01,0.0,0.5,0.5,1\n")
    with pytest.raises(AvaFormatError, match=r"gt2.csv:2: box x1=-0.01, .* outside \[0, 1\]"):
        evaluate_files(gt, pred)


def test_gt_partly_outside_the_label_map_is_scored_mostly_outside_refused(tmp_path):
    pred = _write(tmp_path, "p.csv", "v,0902,0.0,0.0,0.5,0.5,1,0.9\n")
    # half the rows outside the 60-class list (ids 2, 16): scored, and counted as skipped
    gt = _write(tmp_path, "gt.csv", "".join(f"v,0902,0.0,0.0,0.5,0.5,{i}\n" for i in (1, 12, 2, 16)))
    res = evaluate_files(gt, pred, DEFAULT_LABEL_MAP)
    assert res.skipped["gt"] == 2 and res.per_class[1] == 1.0
    gt = _write(tmp_path, "gt2.csv", "".join(f"v,0902,0.0,0.0,0.5,0.5,{i}\n" for i in (1, 12, 2, 16, 18)))
    with pytest.raises(AvaFormatError, match=r"3 of the ground truth's 5 rows \(60%\) .* --label-map"):
        evaluate_files(gt, pred, DEFAULT_LABEL_MAP)


def test_groups_file_must_map_groups_to_integer_ids(tmp_path):
    assert read_groups_file(_write(tmp_path, "a.json", '{"groups": {"pose": [1, 2]}, "_note": "x"}')) == \
        {"pose": [1, 2]}
    for text in ("{", "[1, 2]", '{"pose": [1, true]}', '{"pose": 3}'):
        with pytest.raises(GroupsFileError, match="b.json"):
            read_groups_file(_write(tmp_path, "b.json", text))


def test_pr_curves_are_titled_with_the_class_name(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    titles = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, f, *a, **kw: (titles.append(self.axes[0].get_title()),
                                                                      real(self, f, *a, **kw)))
    gt = _write(tmp_path, "gt.csv", GT + "v,0902,0.5,0.5,1.0,1.0,12\n")
    pred = _write(tmp_path, "p.csv", "v,0902,0.0,0.0,0.5,0.5,1,0.9\nv,0902,0.0,0.0,0.5,0.5,12,0.8\n")
    res = run_evaluate(EvaluateArgs(gt=gt, pred=pred, plots=str(tmp_path / "plots")), echo=lambda m: None)
    assert set(titles) == {f"class 1: {res.class_names[1]}  (AP 1.000)", f"class 12: {res.class_names[12]}  (AP 0.000)"}
    assert res.class_names[1] and res.class_names[12]
    titles.clear()
    plot_pr_curves(res, tmp_path / "g", by="group", groups={"pose": [12], "object": [1]})
    assert sorted(titles) == ["group object", "group pose"]
