"""extract/datasets/multisports.py: the GT pickle and person-box pickles in MultiSports' layouts, and
`extract features --dataset multisports` on the rendered synthetic dataset."""
import pickle

import numpy as np
import pytest
import torch

from stagecache.extract.datasets.multisports import NOT_EVALUATED, evaluated_labels, read_multisports_boxes
from stagecache.extract.datasets.multisports import read_multisports_gt
from stagecache.extract.datasets.tubes_pkl import TubeFormatError, frame_timestamp, to_annotations
from stagecache.extract.features import ExtractArgs, run_extract
from stagecache.extract.store import open_store
from stagecache.extract.synthetic.multisports import LABELS, make_multisports_dataset, multisports_gt

torch.set_num_threads(1)


def test_gt_pickle_read_as_written(tmp_path):
    gt = multisports_gt(3, tube_dtype=np.float32)
    (tmp_path / "gt.pkl").write_bytes(pickle.dumps(gt))
    g = read_multisports_gt(tmp_path / "gt.pkl")
    assert g.labels == LABELS and g.test_videos == gt["test_videos"] and g.nframes == gt["nframes"]
    v = g.test_videos[0][0]
    want = [(c, t) for c in sorted(gt["gttubes"][v]) for t in gt["gttubes"][v][c]]
    assert [c for c, _ in g.tubes[v]] == [c for c, _ in want]
    for (_, a), (_, b) in zip(g.tubes[v], want):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert evaluated_labels(g.labels).tolist() == [n not in NOT_EVALUATED for n in LABELS]
    gt["test_videos"].append([])  # two splits: not MultiSports
    (tmp_path / "two.pkl").write_bytes(pickle.dumps(gt))
    with pytest.raises(TubeFormatError, match="two.pkl: MultiSports has one split"):
        read_multisports_gt(tmp_path / "two.pkl")


def test_person_boxes_in_both_key_spellings(tmp_path):
    videos = ["basketball/v_abc_c001", "aerobic_gymnastics/v_xyz_c002"]
    box = np.array([[0.1, 0.2, 0.5, 0.9, 0.8], [0.0, 0.0, 0.2, 0.2, 0.3]], np.float32)
    released = {"v_abc_c001,1": box, "v_xyz_c002,7": box[:1], "v_other_c003,1": box}  # clip name, frame from 1
    mmaction = {"basketball/v_abc_c001.mp4,0001": box, "aerobic_gymnastics/v_xyz_c002.mp4,0007": box[:1]}
    for name, d in (("released.pkl", released), ("mmaction.pkl", mmaction)):
        (tmp_path / name).write_bytes(pickle.dumps(d))
        p = read_multisports_boxes(tmp_path / name, videos)
        assert p.video.tolist() == [videos[0]] * 2 + [videos[1]]  # a video of another split left out
        np.testing.assert_allclose(p.timestamp, frame_timestamp([1, 1, 7], 25.0))
        np.testing.assert_array_equal(p.box, np.concatenate([box, box[:1]])[:, :4])
        np.testing.assert_array_equal(p.score, np.concatenate([box, box[:1]])[:, 4])
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"v_abc_c001": box}))
    with pytest.raises(TubeFormatError, match="bad.pkl: key 'v_abc_c001' is not '<video>,<frame>'"):
        read_multisports_boxes(tmp_path / "bad.pkl", videos)


def test_extract_features_multisports(tmp_path):
    pkl = make_multisports_dataset(tmp_path / "ms", seed=1, videos_per_sport=1, n_frames=(10, 12), height=32, width=48)
    gt = read_multisports_gt(pkl)
    out = tmp_path / "test1.zarr"
    s = run_extract(ExtractArgs(split="test1", videos=str(pkl.parent), dataset="multisports", annotations=str(pkl),
                                proposals=str(pkl.parent / "MultiSports_box/test.pkl"), out=str(out), random_init=True,
                                frame_stride=3, backbone_kwargs=dict(model_depth=50, stem_dim_outs=(8, 1)),
                                sampling_overrides=dict(frames=4, short_side=32), num_workers=0, progress=False,
                                device="cpu"))
    assert s["failed"] == [] and s["done"] == len(gt.test_videos[0])
    t = open_store(str(out)).load()
    ann = to_annotations(gt, gt.test_videos[0], fps=25.0, frame_stride=3)
    want = sorted(set(zip(ann.video.tolist(), np.round(ann.timestamp, 3).tolist())))
    have = sorted(set(zip([t.video_names[i] for i in t.kf_video.tolist()], np.round(t.kf_time.numpy(), 3).tolist())))
    assert have == want  # keyframes: the annotated frames on the stride grid, proposals of other frames left out
    is_gt = t.data["base/actor_is_gt"].numpy().astype(bool)
    assert is_gt.sum() == len(ann.video) and (~is_gt).sum() > 0  # GT rows and the box file's proposals
    assert t.data["base/actor_labels"].shape[1] == len(LABELS)


def test_train_head_validation_of_a_multisports_store_is_its_own_frame_map(tmp_path):
    """run_eval's tube target on a MultiSports store scores as `evaluate --dataset multisports`
    (its VOC AP and matching), not as MOC's frame-mAP."""
    from stagecache.pipelines.evaluation.multisports import evaluate_multisports
    from stagecache.pipelines.evaluation.tubes import tube_frame_map
    from stagecache.pipelines.training.run_eval import (EvalContext, det_predictions, tube_result,
                                                         tube_target)

    pkl = make_multisports_dataset(tmp_path / "ms", seed=2, videos_per_sport=1, n_frames=(10, 12), height=32, width=48)
    out = tmp_path / "test1.zarr"
    run_extract(ExtractArgs(split="test1", videos=str(pkl.parent), dataset="multisports", annotations=str(pkl),
                            proposals=str(pkl.parent / "MultiSports_box/test.pkl"), out=str(out), random_init=True,
                            backbone_kwargs=dict(model_depth=50, stem_dim_outs=(8, 1)),
                            sampling_overrides=dict(frames=4, short_side=32), num_workers=0, progress=False,
                            device="cpu"))
    st = open_store(str(out))
    t = st.load({"base": None})
    target = tube_target(st, t, str(pkl))
    assert target.protocol == "multisports"
    # every stored box (GT and proposals) with random scores for every class: ties, false boxes, misses
    rng = np.random.default_rng(0)
    n, ids = len(t.actor_kf), list(range(1, len(LABELS) + 1))
    det = {"kf": np.repeat(t.actor_kf.numpy(), len(ids)), "box": np.repeat(t.data["base/actor_box"].numpy(), len(ids), 0),
           "class": np.tile(ids, n), "score": rng.choice([0.1, 0.5, 0.9], size=n * len(ids))}
    ev = EvalContext({}, ids, ids, None, 64, tube=target)
    got = tube_result(ev, t, det)
    pred = det_predictions(det, t)
    want = evaluate_multisports(target.gt, pred, fps=target.fps, video_ious=(), all_ious=False,
                                frame_stride=target.frame_stride).frame_ap
    np.testing.assert_array_equal(np.array([got.per_class[i] for i in ids]), want)  # NaN where want is NaN
    moc = tube_frame_map(target.gt, target.split, pred, fps=target.fps, protocol="moc", frame_stride=target.frame_stride)
    assert not np.allclose(np.nan_to_num(moc), np.nan_to_num(want))  # the two protocols differ here: the test can tell
