"""Tests of the synthetic AVA-format generator (extract/synthetic*.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stagecache.extract import ava_io
from stagecache.extract.synthetic import (
    FIRST_KEYFRAME, GROUPS, LABEL_IDS, LABEL_NAMES, OBJECT_CLASSES, FeatureStoreArgs,
    VideoDatasetArgs, make_feature_store, make_video_dataset, simulate_world, video_arrays,
)
from stagecache.extract.synthetic.video import OBJECT_COLOURS, POSE_COLOURS

R_OBJ, R_ACT = 0.15, 0.2


def _world_arrays(w):
    return {k: v for k, v in vars(w).items() if isinstance(v, np.ndarray)}


# ----------------------------------------------------------------------------- world


def test_world_deterministic_by_seed_split_and_video():
    a = simulate_world(3, 3, 6)
    b = simulate_world(3, 3, 6)
    assert a.video_names == b.video_names == ["syn_000", "syn_001", "syn_002"]
    for k, x in _world_arrays(a).items():
        np.testing.assert_array_equal(x, _world_arrays(b)[k], err_msg=k)
    c = simulate_world(4, 3, 6)
    d = simulate_world(3, 3, 6, split="val")
    for other in (c, d):
        assert other.num_actors != a.num_actors or not np.array_equal(other.actor_box, a.actor_box)
    # A video depends only on (seed, split, index): a longer run has the same prefix.
    e = simulate_world(3, 4, 6)
    n = a.num_actors
    np.testing.assert_array_equal(e.actor_box[:n], a.actor_box)
    np.testing.assert_array_equal(e.actor_labels[:n], a.actor_labels)
    f = simulate_world(3, 2, 6, first_video=1)
    assert f.video_names == ["syn_001", "syn_002"]
    np.testing.assert_array_equal(f.actor_box, a.actor_box[a.kf_video[a.actor_kf] >= 1])


def _rules_by_loop(w):
    """Each label rule recomputed actor by actor from the boxes, poses and tracks."""
    cen = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], dtype=np.float64)
    out = np.zeros((w.num_actors, 7), dtype=bool)
    where = {}  # (video, time, person) -> actor row
    for a in range(w.num_actors):
        k = w.actor_kf[a]
        where[(w.kf_video[k], w.kf_time[k], w.actor_person[a])] = a
    for a in range(w.num_actors):
        k = w.actor_kf[a]
        c = cen(w.actor_box[a])
        out[a, w.actor_pose[a]] = True
        objs = np.nonzero(w.object_kf == k)[0]
        dists = [np.linalg.norm(c - cen(w.object_box[o])) for o in objs]
        o = objs[int(np.argmin(dists))]
        if min(dists) < R_OBJ:
            out[a, 3] = w.object_class[o] == OBJECT_CLASSES.index("cup")
            out[a, 4] = w.object_class[o] == OBJECT_CLASSES.index("bike")
        for b in np.nonzero(w.actor_kf == k)[0]:
            if b != a and np.linalg.norm(c - cen(w.actor_box[b])) < R_ACT:
                out[a, 5] = True
        prev = where.get((w.kf_video[k], w.kf_time[k] - 1, w.actor_person[a]))
        if prev is not None and w.actor_pose[prev] in (1, 2) and w.actor_pose[a] == 0:
            out[a, 6] = True
    return out


def test_label_rules_hold():
    w = simulate_world(5, 6, 8)
    np.testing.assert_array_equal(w.actor_labels, _rules_by_loop(w))
    # Structural promises: one pose each, all objects at every keyframe, ids in person order.
    assert (w.actor_labels[:, :3].sum(1) == 1).all()
    counts = np.bincount(w.object_kf, minlength=w.num_keyframes)
    for v in range(len(w.videos)):
        assert (counts[w.kf_video == v] == w.videos[v].num_objects).all()
        assert 3 <= w.videos[v].num_objects <= 8 and 2 <= w.videos[v].num_actors <= 5
    np.testing.assert_array_equal(w.kf_time[: 8], FIRST_KEYFRAME + np.arange(8.0))
    assert ((w.actor_box >= 0) & (w.actor_box <= 1)).all()


def test_label_rates_are_healthy():
    w = simulate_world(0, 40, 20)
    rate = w.actor_labels.mean(0)
    for j in (3, 4, 5):  # hold cup, ride bike, talk to
        assert 0.1 <= rate[j] <= 0.4, (LABEL_NAMES[j], rate[j])
    assert rate[6] >= 0.05, rate[6]  # get up
    assert (rate[:3] > 0.2).all()
    # Nearness matters, not presence: cups and bikes are present far from actors too.
    cen = lambda b: np.stack(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2), 1)
    ac, oc = cen(w.actor_box), cen(w.object_box)
    for cls in (0, 1):
        far = 0
        for k in range(0, w.num_keyframes, 7):
            objs = np.nonzero((w.object_kf == k) & (w.object_class == cls))[0]
            acts = np.nonzero(w.actor_kf == k)[0]
            if objs.size and acts.size:
                d = np.linalg.norm(ac[acts][:, None] - oc[objs][None], axis=-1)
                far += int((d.min(0) > R_OBJ).sum())
        assert far > 10
    # Occasional drop-out: fewer actor rows than actors x keyframes, but not many fewer.
    full = sum(v.num_actors for v in w.videos) * 20
    assert 0.9 * full < w.num_actors < full


# ----------------------------------------------------------------------------- features


def _features(seed, split, n_videos, kf, dim=64):
    rows = [video_arrays(seed, split, i, kf, actor_dim=dim, object_dim=16, proposals=False)
            for i in range(n_videos)]
    feats = np.concatenate([r["pooled"] for r in rows])
    return feats, np.concatenate([r["base"]["actor_labels"] for r in rows])


def _relational_inputs(w):
    """Oracle relational inputs: nearest object distance and class, nearest actor distance,
    current pose and the same track's pose at the previous keyframe (one-hot, 'none' included)."""
    cen = lambda b: np.stack(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2), 1)
    ac, oc = cen(w.actor_box), cen(w.object_box)
    X = np.zeros((w.num_actors, 1 + 4 + 1 + 3 + 4))
    key = {(w.kf_video[w.actor_kf[a]], w.kf_time[w.actor_kf[a]], w.actor_person[a]): a
           for a in range(w.num_actors)}
    for a in range(w.num_actors):
        k = w.actor_kf[a]
        objs = np.nonzero(w.object_kf == k)[0]
        d = np.linalg.norm(oc[objs] - ac[a], axis=1)
        X[a, 0] = d.min()
        X[a, 1 + w.object_class[objs[d.argmin()]]] = 1
        others = np.nonzero((w.actor_kf == k) & (np.arange(w.num_actors) != a))[0]
        X[a, 5] = np.linalg.norm(ac[others] - ac[a], axis=1).min() if others.size else 9.0
        X[a, 6 + w.actor_pose[a]] = 1
        prev = key.get((w.kf_video[k], w.kf_time[k] - 1, w.actor_person[a]))
        X[a, 9 + (3 if prev is None else w.actor_pose[prev])] = 1
    return X


def test_features_carry_pose_but_no_relations():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.tree import DecisionTreeClassifier

    w_tr, w_te = simulate_world(0, 30, 20), simulate_world(1, 12, 20, split="val")
    x_tr, y_tr = _features(0, "train", 30, 20)
    x_te, y_te = _features(1, "val", 12, 20)
    np.testing.assert_array_equal(y_tr, w_tr.actor_labels)  # same rows, same labels as the world
    np.testing.assert_array_equal(y_te, w_te.actor_labels)

    pose = LogisticRegression(max_iter=500).fit(x_tr, w_tr.actor_pose)
    assert pose.score(x_te, w_te.actor_pose) > 0.9

    r_tr, r_te = _relational_inputs(w_tr), _relational_inputs(w_te)
    stand_te = (w_te.actor_pose == 0).astype(float)
    for j in (3, 4, 5, 6):
        lin = LogisticRegression(max_iter=500).fit(x_tr, y_tr[:, j])
        ap_lin = average_precision_score(y_te[:, j], lin.predict_proba(x_te)[:, 1])
        # Chance: the positive rate; for "get up" the current pose (stand) is legitimately visible.
        chance = y_te[:, j].mean() if j != 6 else average_precision_score(y_te[:, j], stand_te)
        assert ap_lin < chance + 0.1, (LABEL_NAMES[j], ap_lin, chance)
        tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(r_tr, y_tr[:, j])
        ap_rel = average_precision_score(y_te[:, j], tree.predict_proba(r_te)[:, 1])
        assert ap_rel > 0.9, (LABEL_NAMES[j], ap_rel)


def test_feature_arrays_deterministic():
    a = video_arrays(2, "train", 0, 5, actor_dim=16, object_dim=8)
    b = video_arrays(2, "train", 0, 5, actor_dim=16, object_dim=8)
    c = video_arrays(3, "train", 0, 5, actor_dim=16, object_dim=8)
    np.testing.assert_array_equal(a["pooled"], b["pooled"])
    for k in a["base"]:
        np.testing.assert_array_equal(a["base"][k], b["base"][k])
    assert a["pooled"].shape != c["pooled"].shape or not np.array_equal(a["pooled"], c["pooled"])


def test_feature_store_round_trip(tmp_path):
    from stagecache.extract.store import open_store

    path = make_feature_store(tmp_path / "syn.zarr", split="val", seed=7, n_videos=2,
                              keyframes_per_video=4, actor_dim=16, object_dim=8)
    st = open_store(str(path))
    assert st.attrs["label_ids"] == LABEL_IDS and st.attrs["label_names"] == LABEL_NAMES
    assert st.attrs["object_classes"] == OBJECT_CLASSES and st.attrs["split"] == "val"
    assert st.videos == ["syn_000", "syn_001"] and st.num_keyframes == 8
    t = st.load()
    w = simulate_world(7, 2, 4, split="val")
    va = [video_arrays(7, "val", i, 4, actor_dim=16, object_dim=8) for i in range(2)]
    for name in ("actor_box", "actor_score", "actor_is_gt", "actor_labels", "actor_track",
                 "object_box", "object_class", "object_score", "object_feature"):
        want = np.concatenate([v["base"][name] for v in va])
        np.testing.assert_allclose(t.data[f"base/{name}"].numpy().astype(np.float64),
                                   want.astype(np.float64), atol=2e-3, err_msg=name)
    pooled = np.concatenate([v["pooled"] for v in va])
    np.testing.assert_allclose(t.data["synthetic/actor_pooled"].float().numpy(), pooled, atol=2e-3)
    np.testing.assert_array_equal(t.kf_time.numpy(), np.tile(902.0 + np.arange(4), 2))

    gt = t.data["base/actor_is_gt"].numpy()
    labels = t.data["base/actor_labels"].numpy()
    score = t.data["base/actor_score"].numpy()
    track = t.data["base/actor_track"].numpy()
    np.testing.assert_array_equal(labels[gt], w.actor_labels)  # GT rows in world order
    np.testing.assert_array_equal(track[gt], w.actor_person)
    np.testing.assert_array_equal(t.actor_kf.numpy()[gt], w.actor_kf)
    assert (track[~gt] == -1).all()
    jittered = ~gt & (labels.sum(1) > 0)
    assert jittered.sum() == gt.sum()  # one labelled proposal per GT box
    assert ((score[jittered] > 0.5) & (score[jittered] <= 1)).all()
    assert (score[~gt & ~jittered] < 0.4).all()
    assert (~gt & ~jittered).any()  # some false positives
    # Within a keyframe, GT rows come first.
    kf = t.actor_kf.numpy()
    for k in range(st.num_keyframes):
        g = gt[kf == k]
        assert (np.sort(g)[::-1] == g).all()

    # A rerun resumes: nothing is written twice and the data is unchanged.
    make_feature_store(path, split="val", seed=7, n_videos=2, keyframes_per_video=4,
                       actor_dim=16, object_dim=8)
    assert open_store(str(path)).num_actors == st.num_actors


def test_args_validation():
    with pytest.raises(ValueError, match="seconds"):
        VideoDatasetArgs(out_dir="x", seconds=3)
    with pytest.raises(ValueError, match="even"):
        VideoDatasetArgs(out_dir="x", width=161)
    with pytest.raises(ValueError, match="n_videos"):
        FeatureStoreArgs(path="x", n_videos=0)
    with pytest.raises(ValueError, match="reserved"):
        FeatureStoreArgs(path="x", backbone="base")


# ----------------------------------------------------------------------------- videos


def _decode(path):
    import av

    with av.open(str(path)) as c:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    return frames


def test_video_dataset(tmp_path):
    kw = dict(seed=4, n_videos=1, seconds=5, fps=10, width=160, height=120)
    a = make_video_dataset(tmp_path / "a", **kw)
    b = make_video_dataset(tmp_path / "b", **kw)
    c = make_video_dataset(tmp_path / "c", **{**kw, "seed": 5})
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {
        "dataset.json", "videos/syn_000.mp4", "videos/syn_001.mp4", "annotations/label_map.pbtxt",
        "annotations/groups.json", "annotations/train.csv", "annotations/val_proposals.csv",
        "annotations/train_objects.csv", "annotations/val_excluded_timestamps.csv"}
    for f in files:  # same seed -> byte-identical files
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "annotations/train.csv").read_bytes() != (c / "annotations/train.csv").read_bytes()
    assert (a / "videos/syn_000.mp4").read_bytes() != (c / "videos/syn_000.mp4").read_bytes()

    info = json.loads((a / "dataset.json").read_text())
    assert info["fps"] == 10 and info["num_frames"] == 50 and info["keyframe_times"] == [902.0, 903.0]
    assert info["splits"]["train"]["videos"] == ["syn_000"] and info["splits"]["val"]["videos"] == ["syn_001"]
    assert json.loads((a / "annotations/groups.json").read_text()) == GROUPS
    lm = ava_io.read_label_map(a / "annotations/label_map.pbtxt")
    assert lm.ids == LABEL_IDS and lm.names == LABEL_NAMES

    w = simulate_world(4, 1, 2, split="train")
    ann = ava_io.read_annotations(a / "annotations/train.csv", label_map=lm)
    excluded = ava_io.read_excluded(a / "annotations/train_excluded_timestamps.csv")
    # Each kept actor-keyframe has one row per positive label; excluded keyframes have none.
    keep = ~w.kf_excluded[w.actor_kf]
    assert len(ann) == int(w.actor_labels[keep].sum())
    assert excluded == {("syn_000", ava_io.timestamp_key(w.kf_time[k])) for k in np.nonzero(w.kf_excluded)[0]}
    assert not any((v, ava_io.timestamp_key(t)) in excluded for v, t in zip(ann.video, ann.timestamp))
    props = ava_io.read_proposals(a / "annotations/train_proposals.csv")
    assert (props.score > 0).all() and (props.score <= 1).all() and len(props) >= w.num_actors
    objs = ava_io.read_objects(a / "annotations/train_objects.csv")
    assert len(objs) == w.num_objects and (objs.score == 1).all()
    np.testing.assert_array_equal(objs.class_id, w.object_class)

    frames = _decode(a / "videos/syn_000.mp4")
    assert len(frames) == 50 and frames[0][1].shape == (120, 160, 3)
    # Keyframe t is the frame at video time t - 900; the pose colour shows at the actor's centre
    # (where no other box covers it) and the object colour at uncovered object centres.
    for k in range(w.num_keyframes):
        time, img = frames[int((w.kf_time[k] - 900) * 10)]
        assert abs(time - (w.kf_time[k] - 900)) < 1e-6
        boxes = np.concatenate((w.actor_box[w.actor_kf == k], w.object_box[w.object_kf == k]))
        colours = np.concatenate((POSE_COLOURS[w.actor_pose[w.actor_kf == k]],
                                  OBJECT_COLOURS[w.object_class[w.object_kf == k]]))
        checked = 0
        for i, bx in enumerate(boxes):
            x, y = (bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2
            others = np.delete(boxes, i, 0)
            m = 0.03  # keep away from other shapes and borders
            inside = ((others[:, 0] - m < x) & (x < others[:, 2] + m)
                      & (others[:, 1] - m < y) & (y < others[:, 3] + m))
            if inside.any():
                continue
            px = img[int(y * 120), int(x * 160)].astype(int)
            assert np.abs(px - colours[i]).max() < 60, (k, i, px, colours[i])
            checked += 1
        assert checked >= 1
