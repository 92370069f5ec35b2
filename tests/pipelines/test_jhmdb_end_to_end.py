"""JHMDB-21 / UCF101-24 end to end on the synthetic tube dataset.

1. Margin (feature level, seeds 0 and 1): the synthetic label of a person depends on the other
   person's colour; with features that carry only the own colour, STAGE (actors only, 2 layers,
   4 heads, softmax) must beat the linear head on frame-mAP and video-mAP.
2. Smoke run through the real commands: `extract features --dataset jhmdb` (tiny random-init
   SlowFast on the rendered frame folders), train-head with --loss softmax for every head that needs
   only pooled features (and tonly on the saved temporal level), `evaluate --dataset jhmdb`.
"""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stagecache.extract import ava_io
from stagecache.extract.datasets.tubes_pkl import read_tube_pickle
from stagecache.extract.store import open_store
from stagecache.extract.synthetic.tubes import make_tube_dataset, make_tube_feature_store, write_py2_pickle
from stagecache.pipelines.commands.cli import load_command
from stagecache.pipelines.tools.demo import TUBE_STAGE_ARGS
from stagecache.pipelines.training.train import TrainArgs, train
from stagecache.pipelines.evaluation.tubes import evaluate_split

torch.set_num_threads(1)
STAGE_ARGS = TUBE_STAGE_ARGS  # the paper's JHMDB / UCF setting


def _train(train_store, val_store, out, head, head_args=None, epochs=10, seed=0):
    train(TrainArgs(train_store=str(train_store), val_store=str(val_store), head=head, head_args=head_args or {},
                    out_dir=str(out), epochs=epochs, batch_size=8, lr=1e-3, loss="softmax", train_boxes="gt",
                    val_boxes="gt", early_stop=100, seed=seed, device="cpu", progress=False))
    return out / "val_predictions.csv"


def test_stage_beats_linear_where_the_rule_is_relational(tmp_path):
    res = {"linear": [], "stage": []}
    for seed in (0, 1):
        pkl = make_tube_dataset(tmp_path / f"d{seed}", dataset="jhmdb", seed=seed, videos_per_class=3, n_frames=10,
                                render=False)
        gt = read_tube_pickle(pkl)
        st = {s: make_tube_feature_store(pkl, tmp_path / f"d{seed}" / f"{s}.zarr", dataset="jhmdb", split=s,
                                         seed=seed) for s in ("train1", "test1")}
        for head, ha in (("linear", {}), ("stage", STAGE_ARGS)):
            csv = _train(st["train1"], st["test1"], tmp_path / f"{head}{seed}", head, ha, seed=seed)
            r = evaluate_split(gt, 1, ava_io.read_predictions(csv), fps=30.0, min_tube_length=5)
            res[head].append([r.frame_map, r.video_map(0.5)])
    lin, stg = np.array(res["linear"]), np.array(res["stage"])  # (seeds, [frame-mAP, video-mAP@0.5])
    assert (stg >= lin).all(), (lin, stg)
    assert (stg.mean(0) - lin.mean(0) >= 0.2).all(), (lin, stg)  # measured: ~+0.5 frame-mAP, ~+0.4 video-mAP


def _extract(pkl, root, out, *split):
    return CliRunner().invoke(load_command("extract"), [
        "features", "--dataset", "jhmdb", "--annotations", str(pkl), "--videos", str(root), "--split", *split,
        "--out", str(out), "--random-init", "--device", "cpu", "--no-progress",
        "--backbone-args", json.dumps({"model_depth": 50, "stem_dim_outs": [8, 1]}),
        "--sampling-args", json.dumps({"frames": 4, "short_side": 32}), "--save", "temporal",
        "--num-workers", "0", "--batch-size", "8"])


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("jh")
    pkl = make_tube_dataset(root, dataset="jhmdb", seed=0, videos_per_class=1, n_frames=8, height=32, width=40)
    stores = {side: root / f"{side}1.zarr" for side in ("train", "test")}
    for side, out in stores.items():
        r = _extract(pkl, root, out, "1", "--side", side)
        assert r.exit_code == 0, r.output
    # a rerun resumes: every video is committed already, nothing is written again
    r = _extract(pkl, root, stores["test"], "test1")
    assert r.exit_code == 0 and "done 0, skipped 2" in r.output, r.output
    return pkl, stores


def test_extracted_stores_follow_the_pickle(extracted):
    pkl, stores = extracted
    gt = read_tube_pickle(pkl)
    t = open_store(str(stores["test"])).load()
    assert t.video_names == sorted(gt.videos("test", 1))
    st = open_store(str(stores["test"]))
    assert st.attrs["split"] == "test1" and st.attrs["label_names"] == gt.labels
    n_boxes = sum(len(tb) for v in gt.videos("test", 1) for _, tb in gt.tubes[v])
    assert t.data["base/actor_box"].shape[0] == n_boxes == t.data["slowfast_r50/actor_temporal"].shape[0]
    assert t.data["base/actor_labels"].sum(1).eq(1).all()  # one label per actor


def test_softmax_heads_train_and_evaluate(extracted, tmp_path):
    pkl, stores = extracted
    heads = {"linear": {}, "stage": STAGE_ARGS, "sto": {}, "lfb": {}, "tonly": {}}
    for head, ha in heads.items():
        csv = _train(stores["train"], stores["test"], tmp_path / head, head, ha, epochs=1)
        assert csv.exists(), head
    r = CliRunner().invoke(load_command("evaluate"), [
        "--dataset", "jhmdb", "--gt", str(pkl), "--pred", str(tmp_path / "stage" / "val_predictions.csv"),
        "--split", "1", "--min-tube-length", "2", "--json", str(tmp_path / "eval.json")])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "eval.json").read_text())
    assert 0.0 <= out["mean"]["frame_mAP"] <= 1.0 and set(out["mean"]["video_mAP"]) == {"0.2", "0.5", "0.75", "0.5:0.95"}
    assert "frame-mAP@0.5" in r.output


def test_the_runs_val_map_is_evaluate_datasets_frame_map(extracted, tmp_path):
    pkl, stores = extracted
    run = tmp_path / "run"
    summary = train(TrainArgs(train_store=str(stores["train"]), val_store=str(stores["test"]), head="linear",
                              out_dir=str(run), epochs=2, batch_size=8, lr=1e-3, loss="softmax", train_boxes="gt",
                              val_boxes="gt", early_stop=100, seed=0, device="cpu", progress=False, tube_gt=str(pkl)))
    r = CliRunner().invoke(load_command("evaluate"), [
        "--dataset", "jhmdb", "--gt", str(pkl), "--pred", str(run / "val_predictions.csv"), "--split", "1",
        "--json", str(tmp_path / "eval.json")])
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "eval.json").read_text())["runs"][0]
    per = json.loads((run / "per_class_ap.json").read_text())
    assert summary["best_val_map"] == ev["frame_mAP"] == per["mAP"]
    assert [per["per_class"][str(i + 1)] for i in range(len(ev["per_class_frame_AP"]))] == \
        list(ev["per_class_frame_AP"].values())
    assert "evaluate --dataset's frame-mAP" in summary["val_metric"]
    plain = _train(stores["train"], stores["test"], tmp_path / "plain", "linear", epochs=1).parent
    assert "give --tube-gt" in json.loads((plain / "summary.json").read_text())["val_metric"]


def test_bad_tube_inputs_are_one_error_line(extracted, tmp_path):
    from stagecache.pipelines.commands.cli import main

    pkl, stores = extracted
    not_act = tmp_path / "JHMDB-GT.pkl"
    write_py2_pickle(not_act, {"labels": ["a"]})
    wrong_split = tmp_path / "wrong.csv"  # split 1's test predictions given as split 2's
    ava_io.write_predictions(wrong_split, ava_io.read_predictions(_train(
        stores["train"], stores["test"], tmp_path / "run", "linear", epochs=1)))
    base = ["extract", "features", "--dataset", "jhmdb", "--videos", str(pkl.parent), "--random-init",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "s.zarr")]
    cases = [
        (base + ["--annotations", str(pkl), "--split", "val"], "split 'val'"),
        (base + ["--annotations", str(not_act), "--split", "train1"], f"{not_act}: not an ACT ground-truth pickle"),
        (["evaluate", "--dataset", "jhmdb", "--gt", str(pkl), "--pred", str(wrong_split), "--split", "2"],
         f"{wrong_split}: 2 video(s) are not test videos of this split"),
    ]
    for argv, message in cases:
        r = CliRunner().invoke(main, argv)
        assert r.exit_code == 1, r.output
        lines = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output, r.output
    assert not (tmp_path / "s.zarr").exists()
