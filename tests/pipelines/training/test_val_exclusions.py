"""The number a run reports is `evaluate`'s: the in-loop val mAP, best.pt's epoch and
per_class_ap.json are scored without the excluded timestamps (train-head --excluded, or the ones the
val store recorded at extraction) exactly as `evaluate --excluded` scores val_predictions.csv."""
import json
import shutil

import numpy as np
import pytest
import torch

from stagecache.extract import ava_io
from stagecache.extract.features_record import excluded_record
from stagecache.extract.store import open_store
from stagecache.pipelines.evaluation.ava import evaluate_files
from stagecache.pipelines.training.train import TrainArgs, train
from stagecache.pipelines.training.val_exclusions import STORE_FILE_ATTR, STORE_PAIRS_ATTR
from tests.pipelines.training.relational_helpers import small_stage_args as _args, small_store_pair


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Stores, the val store's GT as an AVA CSV with its label map, and an excluded-timestamps file
    of five val keyframes that have GT (and one pair of another video)."""
    root = tmp_path_factory.mktemp("ex")
    stores = small_store_pair(root, train_videos=4, val_videos=2, keyframes=12)
    st = open_store(stores[1])
    t = st.load({"base": None})
    is_gt = t.data["base/actor_is_gt"].bool().numpy()
    labels = t.data["base/actor_labels"].numpy()[is_gt]
    kf = t.actor_kf.numpy()[is_gt]
    videos = np.asarray(t.video_names, dtype=object)[t.kf_video.numpy()]
    times = t.kf_time.numpy()
    r, c = np.nonzero(labels)
    ids = [int(i) for i in st.attrs["label_ids"]]
    ava_io.write_annotations(root / "val_gt.csv", ava_io.Annotations(
        video=videos[kf[r]], timestamp=times[kf[r]], box=t.data["base/actor_box"].numpy()[is_gt][r],
        action=np.asarray(ids)[c], person=np.flatnonzero(is_gt)[r]))
    ava_io.write_label_map(root / "label_map.pbtxt", ava_io.LabelMap(ids, list(st.attrs["label_names"])))
    gt_kf = np.unique(kf)
    chosen = list(gt_kf[:3]) + list(gt_kf[-2:])  # both videos
    pairs = [(videos[k], float(times[k])) for k in chosen] + [("not_a_val_video", 902.0)]
    ava_io.write_excluded(root / "excluded.csv", pairs)
    return {"stores": stores, "gt": root / "val_gt.csv", "lm": root / "label_map.pbtxt",
            "excluded": root / "excluded.csv", "pairs": pairs, "root": root}


def test_in_loop_map_is_evaluates_with_the_same_exclusions(data, tmp_path):
    run = tmp_path / "run"
    summary = train(_args(data["stores"], run, excluded=str(data["excluded"]), epochs=2))
    config = json.loads((run / "config.json").read_text())
    assert config["excluded"] == {"file": str(data["excluded"]), "source": "option", "count": 6, "val_keyframes": 5}
    official = evaluate_files(data["gt"], run / "val_predictions.csv", data["lm"], data["excluded"])
    plain = evaluate_files(data["gt"], run / "val_predictions.csv", data["lm"])
    assert abs(plain.map - official.map) > 1e-4  # the exclusions change the number: the test can tell
    # best.pt's epoch, its val mAP, per_class_ap.json: evaluate --excluded's numbers
    torch.testing.assert_close(summary["best_val_map"], official.map, rtol=0, atol=1e-9)
    ap = json.loads((run / "per_class_ap.json").read_text())
    assert ap["mAP"] == pytest.approx(official.map, abs=1e-9)
    for k, v in official.per_class.items():
        assert ap["per_class"][str(k)] == pytest.approx(v, abs=1e-9, nan_ok=True)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(line["val_map"] for line in lines) == summary["best_val_map"]
    assert "leaves out 5 val keyframe(s)" in (run / "train.log").read_text()


def _store_with_recorded_exclusions(data, dest):
    """A copy of the val store whose base group records the exclusions, as extract features --excluded does."""
    shutil.copytree(data["stores"][1], dest)
    meta = dest / "meta" / "base.json"
    m = json.loads(meta.read_text())
    m["attrs"].update(excluded_record(str(data["excluded"])))  # what extract features --excluded records
    assert set(m["attrs"]) >= {STORE_FILE_ATTR, STORE_PAIRS_ATTR}
    meta.write_text(json.dumps(m))
    return str(dest)


def test_exclusions_recorded_in_the_val_store_are_used_and_resume_keeps_them(data, tmp_path):
    val = _store_with_recorded_exclusions(data, tmp_path / "val_ex.zarr")
    stores = (data["stores"][0], val)
    by_option = train(_args(data["stores"], tmp_path / "opt", excluded=str(data["excluded"]), epochs=2))
    train(_args(stores, tmp_path / "st", epochs=1))
    cfg = json.loads((tmp_path / "st" / "config.json").read_text())
    assert cfg["excluded"] == {"file": "excluded.csv", "source": "store", "count": 6,
                               "val_keyframes": 5}
    # A resumed run from another session (commit, threads, device resolution) continues.
    cfg["environment"] |= {"git_commit": "0" * 40, "git_dirty": True, "torch_threads": 99, "device": "cuda:0"}
    (tmp_path / "st" / "config.json").write_text(json.dumps(cfg))
    from_store = train(_args(stores, tmp_path / "st", epochs=2, resume=True))
    assert from_store["best_val_map"] == by_option["best_val_map"]  # the same keyframes excluded
    # The option wins over the store; other exclusions are another run, refused on resume.
    from stagecache.pipelines.training.run_dir import ResumeMismatchError

    other = data["root"] / "other_excluded.csv"
    ava_io.write_excluded(other, data["pairs"][:2])
    with pytest.raises(ResumeMismatchError, match="excluded"):
        train(_args(stores, tmp_path / "st", epochs=3, resume=True, excluded=str(other)))


def test_excluded_with_tube_gt_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="--excluded"):
        TrainArgs(train_store="a", val_store="b", excluded=str(data["excluded"]), tube_gt=str(data["excluded"]))


def test_balanced_retraining_scores_without_the_runs_exclusions(data, tmp_path):
    from stagecache.pipelines.training.balanced import retrain_classifier_balanced

    run = tmp_path / "run"
    train(_args(data["stores"], run, excluded=str(data["excluded"]), epochs=1))
    retrain_classifier_balanced(run, epochs=1)
    out = run / "balanced"
    official = evaluate_files(data["gt"], out / "val_predictions.csv", data["lm"], data["excluded"])
    plain = evaluate_files(data["gt"], out / "val_predictions.csv", data["lm"])
    assert abs(plain.map - official.map) > 1e-4
    ap = json.loads((out / "per_class_ap.json").read_text())
    assert ap["mAP"] == pytest.approx(official.map, abs=1e-9)
