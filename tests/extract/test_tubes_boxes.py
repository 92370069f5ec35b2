"""extract/datasets/tube_boxes.py: JHMDB-21 / UCF101-24 boxes besides the GT rows, i.e. jittered GT
copies (`extract features --gt-jitter`) and a person detector run over the frame folders
(`extract detections --dataset`) whose proposals feed `extract features` and `train-head`."""
import os
import signal
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stagecache.extract import ava_io
from stagecache.extract.datasets.tube_boxes import jitter_boxes, jittered_gt_proposals, keyframe_times
from stagecache.extract.datasets.tubes_pkl import TubeGT, read_tube_pickle, to_annotations
from stagecache.extract.features import ExtractArgs, run_extract
from stagecache.extract.store import open_store
from stagecache.extract.synthetic.tubes import make_tube_dataset
from tests.extract.store.helpers import fork_call, wait_child

torch.set_num_threads(1)
TINY = {"model_depth": 50, "stem_dim_outs": [8, 1]}
SAMPLING = {"frames": 4, "short_side": 32}

T_A = np.array([[1, 10, 20, 50, 80], [2, 12, 20, 52, 80], [3, 14, 20, 54, 80]], np.float64)
T_B1 = np.array([[f, 0, 0, 30, 40] for f in range(1, 6)], np.float64)
T_B2 = np.array([[f, 300, 100, 330, 250] for f in range(2, 5)], np.float64)  # y2 beyond height 240
GT = TubeGT("gt.pkl", ["a", "b"], {"v/a": [(0, T_A)], "v/b": [(1, T_B1), (1, T_B2)]}, {"v/a": 3, "v/b": 6},
            [["v/a", "v/b"]], [["v/b"]], {"v/a": (100, 200), "v/b": (240, 320)})


def test_jitter_boxes_hand_computed():
    # each side moves by F x the box's own size x the draw, then the clip to the frame
    box, u = np.array([0.2, 0.2, 0.6, 0.8]), np.array([[1.0, -1.0, -1.0, 1.0], [-1.0, -1.0, 1.0, 1.0]])
    np.testing.assert_allclose(jitter_boxes(box, u, 0.25), [[0.3, 0.05, 0.5, 0.95], [0.1, 0.05, 0.7, 0.95]])
    np.testing.assert_allclose(jitter_boxes(np.array([0.0, 0.0, 0.4, 1.0]), u[1:], 0.4), [[0.0, 0.0, 0.56, 1.0]])


def test_jittered_boxes_are_never_inverted_and_stay_in_the_frame():
    rng = np.random.default_rng(0)
    lo = rng.uniform(-0.1, 1.0, (200, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0, 0.5, (200, 2)) * (rng.random((200, 1)) > 0.2)], 1)
    for box in np.clip(boxes, 0, 1):  # a fifth of them zero-sized
        out = jitter_boxes(box, rng.uniform(-1, 1, (8, 4)), 0.49)
        assert ((out >= 0) & (out <= 1)).all() and (out[:, 2] >= out[:, 0]).all() and (out[:, 3] >= out[:, 1]).all()


def test_jittered_gt_copies_follow_the_keyframes_and_depend_only_on_their_key():
    ann = to_annotations(GT, ["v/a", "v/b"], fps=30.0, frame_stride=2)
    p = jittered_gt_proposals(GT, ["v/a", "v/b"], fps=30.0, jitter=0.1, copies=2, seed=3, frame_stride=2)
    assert len(p) == 2 * len(ann) == 2 * (2 + 3 + 1)  # frames 1, 3 of a; 1, 3, 5 of b1; 3 of b2
    np.testing.assert_array_equal(p.video, np.repeat(ann.video.astype(str), 2))
    np.testing.assert_array_equal(p.timestamp, np.repeat(ann.timestamp, 2))
    assert (p.score == 1.0).all()
    gt_box = np.repeat(ann.box, 2, axis=0)
    size = np.tile(np.stack([gt_box[:, 2] - gt_box[:, 0], gt_box[:, 3] - gt_box[:, 1]], 1), 2)  # (N, 4): w h w h
    moved = np.abs(p.box - gt_box)
    assert (moved <= 0.1 * size + 1e-6).all() and (moved > 0).any()
    # the draw of a (video, frame, tube) does not depend on the other videos (shards, resumed runs)
    alone = jittered_gt_proposals(GT, ["v/b"], fps=30.0, jitter=0.1, copies=2, seed=3, frame_stride=2)
    np.testing.assert_array_equal(alone.box, p.box[p.video == "v/b"])
    other = jittered_gt_proposals(GT, ["v/a", "v/b"], fps=30.0, jitter=0.1, copies=2, seed=4, frame_stride=2)
    assert not np.array_equal(other.box, p.box)
    with pytest.raises(ValueError, match=r"gt_jitter must be in \[0, 0.5\)"):
        jittered_gt_proposals(GT, ["v/a"], fps=30.0, jitter=0.5)


def test_keyframe_times_are_the_annotated_frames_on_the_stride():
    kt = keyframe_times(GT, ["v/a", "v/b"], fps=25.0, frame_stride=2)
    np.testing.assert_allclose(kt["v/a"], [0.0, 2 / 25])
    np.testing.assert_allclose(kt["v/b"], [0.0, 2 / 25, 4 / 25])  # b2's frame 3 coincides with b1's
    ann = to_annotations(GT, ["v/a", "v/b"], fps=25.0, frame_stride=2)
    for v, ts in kt.items():
        assert set(ava_io.timestamp_keys(ts)) == set(ava_io.timestamp_keys(ann.timestamp[ann.video == v]))


@pytest.fixture(scope="module")
def tubes(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    pkl = make_tube_dataset(root, dataset="jhmdb", seed=0, videos_per_class=1, n_frames=5, height=32, width=40)
    return root, pkl


def _args(root, pkl, out, split, **kw):
    a = dict(split=split, videos=str(root), label_map=None, dataset="jhmdb", annotations=str(pkl), out=str(out),
             random_init=True, backbone_kwargs=TINY, sampling_overrides=SAMPLING, fps=30.0, num_workers=0,
             progress=False, batch_size=8, device="cpu")
    a.update(kw)
    return ExtractArgs(**a)


def _load(path):
    return {k: v.numpy() for k, v in open_store(str(path)).load().data.items()}


def test_gt_jitter_rows_and_kill_at_every_commit(tubes, tmp_path):
    root, pkl = tubes
    gt = read_tube_pickle(pkl)
    kw = dict(gt_jitter=0.1, gt_jitter_copies=2, seed=5, label_iou=0.5, flush_mb=0)
    assert not run_extract(_args(root, pkl, tmp_path / "ref.zarr", "train1", **kw))["failed"]
    ref = _load(tmp_path / "ref.zarr")
    is_gt = ref["base/actor_is_gt"]
    want = jittered_gt_proposals(gt, gt.videos("train", 1), fps=30.0, jitter=0.1, copies=2, seed=5)
    assert (~is_gt).sum() == len(want) == 2 * is_gt.sum()
    np.testing.assert_array_equal(np.sort(ref["base/actor_box"][~is_gt], 0), np.sort(want.box, 0))
    assert (ref["base/actor_track"][~is_gt] == -1).all() and (ref["base/actor_score"][~is_gt] == 1).all()
    # label transfer at IoU 0.5 gives each copy its own tube's class (one label per row)
    assert (ref["base/actor_labels"][~is_gt].sum(1) == 1).all()
    assert open_store(str(tmp_path / "ref.zarr")).groups["base"]["gt_jitter"] == 0.1
    for n in range(1, 10):  # 2 videos, 2 commits each (base + backbone)
        out = tmp_path / f"k{n}.zarr"
        sig = wait_child(fork_call(lambda: run_extract(_args(root, pkl, out, "train1", **kw)), kill_after=n))
        if sig == 0:
            break
        assert sig == signal.SIGKILL, f"child ended with {sig}"
        assert not run_extract(_args(root, pkl, out, "train1", **kw))["failed"]
        got = _load(out)
        assert sorted(got) == sorted(ref)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"kill after commit {n}: {k}")
    assert n == 5
    with pytest.raises(ValueError, match="gt_jitter"):
        _args(root, pkl, tmp_path / "x.zarr", "train1", gt_jitter=0.6)


@pytest.fixture(scope="module")
def person_weights(tmp_path_factory):
    """A random-init torchvision person detector whose classifier is tilted towards COCO's person, so
    that random boxes come out as confident people (with plain random weights none does)."""
    from stagecache.extract.detectors import build_person_detector

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = build_person_detector("torchvision", random_init=True, score_thresh=0.0, min_size=64, max_size=96)
    with torch.no_grad():
        cls = det.model.roi_heads.box_predictor.cls_score
        cls.weight.mul_(0.02)
        cls.bias.zero_()
        cls.bias[1] = 8.0
    path = tmp_path_factory.mktemp("w") / "person.pt"
    torch.save(det.model.state_dict(), path)
    yield path
    os.remove(path)


def test_detections_over_the_frame_folders_feed_extract_features_and_training(tubes, person_weights, tmp_path):
    from stagecache.pipelines.commands.cli import load_command
    from stagecache.pipelines.training.train import TrainArgs, train

    root, pkl = tubes
    gt = read_tube_pickle(pkl)
    det_out = tmp_path / "det"
    r = CliRunner().invoke(load_command("extract"), [
        "detections", "--dataset", "jhmdb", "--annotations", str(pkl), "--split", "1", "--side", "test",
        "--video-dir", str(root), "--out", str(det_out), "--person-weights", str(person_weights),
        "--person-min-size", "64", "--person-max-size", "96", "--person-max", "3", "--batch-size", "5"])
    assert r.exit_code == 0, r.output
    props = ava_io.read_proposals(str(det_out / "proposals.csv"))
    test_videos = gt.videos("test", 1)
    kt = keyframe_times(gt, test_videos, fps=30.0)
    want = {(v, k) for v, ts in kt.items() for k in ava_io.timestamp_keys(ts)}
    got = set(zip(props.video.tolist(), ava_io.timestamp_keys(props.timestamp).tolist()))
    assert got == want and len(props) > len(want)  # every keyframe of the test split, named as the store's
    store = tmp_path / "test1.zarr"
    assert not run_extract(_args(root, pkl, store, "test1", proposals=str(det_out / "proposals.csv")))["failed"]
    d = _load(store)
    assert (~d["base/actor_is_gt"]).sum() == len(props)  # every detection found its keyframe
    assert d["base/actor_is_gt"].sum() == sum(len(t) for v in test_videos for _, t in gt.tubes[v])
    assert not run_extract(_args(root, pkl, tmp_path / "train1.zarr", "train1"))["failed"]
    run = tmp_path / "run"
    train(TrainArgs(train_store=str(tmp_path / "train1.zarr"), val_store=str(store), head="linear", out_dir=str(run),
                    epochs=1, batch_size=8, loss="softmax", train_boxes="gt", val_boxes="proposals", device="cpu",
                    progress=False))
    pred = ava_io.read_predictions(str(run / "val_predictions.csv"))
    assert set(pred.video.tolist()) == set(test_videos) and len(pred) > 0


def test_detections_name_the_videos_missing_from_the_dataset_root(tmp_path):
    from stagecache.pipelines.commands.cli import main

    pkl = make_tube_dataset(tmp_path / "d", dataset="ucf24", seed=0, videos_per_class=1, n_frames=5, render=False)
    r = CliRunner().invoke(main, ["extract", "detections", "--dataset", "ucf24", "--annotations", str(pkl),
                                  "--split", "test1", "--video-dir", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                                  "--random-init"])
    lines = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
    first = sorted(read_tube_pickle(pkl).videos("test", 1))[0]
    assert f"not found in {tmp_path / 'd'}" in lines[0] and first in lines[0]
