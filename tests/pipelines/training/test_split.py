"""pipelines/training/split.py: both stores checked before train() writes anything (and a store against
a trained run before predict); `feature_dims` (the dims a head is built with, read from store metadata
before loading) agrees with the tensors `load` then builds; NaN/Inf found as a split loads."""
import numpy as np
import pytest
import torch

from stagecache.extract.store import StoreWriter, open_store
from stagecache.extract.synthetic import LABEL_IDS, LABEL_NAMES, OBJECT_CLASSES, make_feature_store, video_arrays, video_name
from stagecache.pipelines.training import split
from stagecache.pipelines.training.head_args import HeadArgError
from stagecache.pipelines.training.split import (NonFiniteError, PreflightError, SplitSpec, backbone_groups, check_predict,
                                                 feature_dims, nonfinite_rows, object_class_count, reads_objects)
from stagecache.pipelines.training.train import TrainArgs, preflight_train, train
from tests.pipelines.commands.bad_input_helpers import write_store


def load_split(path, *, boxes, score_threshold, role="", **kw):
    """(store, tables, GraphData) of one store, read as `split.load` reads it."""
    s = split.load_split(SplitSpec(str(path), role, boxes, score_threshold), **kw)
    return s.store, s.tables, s.graph


CPU = torch.device("cpu")


def _loaded_dims(path, backbones=(), combine="mean", num_object_classes=0):
    _, _, g = load_split(str(path), boxes="gt+proposals", score_threshold=0.0, levels=[], device=CPU,
                         backbones=backbones, combine=combine, num_object_classes=num_object_classes)
    return g.actor_feat.shape[1], g.object_feat.shape[1]


def test_dims_of_a_store_with_object_features(tmp_path):
    path = make_feature_store(tmp_path / "s.zarr", split="train", seed=0, n_videos=1, keyframes_per_video=3,
                              actor_dim=12, object_dim=5)
    store = open_store(str(path))
    assert feature_dims(store, backbone_groups(store, []), "mean") == (12, 5) == _loaded_dims(path)


def _write(path: str, n_videos: int, groups: list[str], arrays_of) -> None:
    """A store of `n_videos` synthetic videos of 3 keyframes (8-d actors, 4-d objects); `arrays_of(v,
    video_arrays(v, ...))` gives each video's arrays per group ("base" and `groups`)."""
    with StoreWriter(path, split="train", label_ids=LABEL_IDS, label_names=LABEL_NAMES,
                     object_classes=OBJECT_CLASSES) as w:
        w.declare_group("base", {"source": "test"})
        for g in groups:
            w.declare_group(g, {"backbone": g})
        for v in range(n_videos):
            va = video_arrays(v, "train", 0, 3, actor_dim=8, object_dim=4)
            counts = dict(timestamps=va["timestamps"], actor_counts=va["actor_counts"], object_counts=va["object_counts"])
            for g, arrays in arrays_of(v, va).items():
                w.add_video(g, video_name(v), arrays=arrays, **counts)


def test_dims_of_two_backbones_and_objects_without_features(tmp_path):
    """concat adds the backbones' widths; object boxes without features become a one-hot of the class."""
    path = str(tmp_path / "two.zarr")
    _write(path, 1, ["a", "b"], lambda v, va: {
        "base": {k: x for k, x in va["base"].items() if k != "object_feature"},
        "a": {"actor_pooled": va["pooled"]}, "b": {"actor_pooled": np.ones((len(va["pooled"]), 6), np.float16)}})
    store = open_store(path)
    n_cls = object_class_count(path)
    assert n_cls == len(OBJECT_CLASSES)
    want = feature_dims(store, ["a", "b"], "concat", n_cls)
    assert want == (14, n_cls) == _loaded_dims(path, ["a", "b"], "concat", n_cls)
    assert feature_dims(store, ["a", "b"], "concat") == (14, 0) == _loaded_dims(path, ["a", "b"], "concat")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_rows_counts_rows_and_finds_the_first(dtype, bad):
    x = torch.randn(7, 3, 2).to(dtype)
    assert nonfinite_rows(x) == (0, -1)
    x[4, 2, 1] = bad
    x[2, 0, 0] = bad
    x[4, 0, 1] = bad  # a second bad value in a row already counted
    assert nonfinite_rows(x) == (2, 2)


def test_nonfinite_rows_skips_integer_and_empty_arrays():
    assert nonfinite_rows(torch.zeros(0, 4)) == (0, -1)
    assert nonfinite_rows(torch.tensor([[1, 2], [3, 4]])) == (0, -1)


def test_a_nonfinite_object_feature_names_its_keyframe(tmp_path):
    """An object row is mapped to its keyframe (video and timestamp), not read as a keyframe index."""
    path = str(tmp_path / "obj.zarr")
    where = {}

    def arrays_of(v, va):
        base = dict(va["base"])
        if v == 1:  # the last object of video 1
            base["object_feature"] = base["object_feature"].copy()
            last = int(va["object_counts"].sum()) - 1
            base["object_feature"][last, 2] = np.inf
            kf = int(np.searchsorted(np.cumsum(va["object_counts"]), last, side="right"))
            where.update(row=where["objects_before"] + last, stamp=float(va["timestamps"][kf]))
        else:
            where["objects_before"] = int(va["object_counts"].sum())
        return {"base": base, "a": {"actor_pooled": va["pooled"]}}

    _write(path, 2, ["a"], arrays_of)
    with pytest.raises(NonFiniteError) as e:
        load_split(path, boxes="gt", score_threshold=0.0, levels=[], device=CPU, role="val")
    msg = str(e.value)
    assert msg.startswith(f"val store {open_store(path).path}: group base, array object_feature: 1 row(s) with NaN/Inf")
    assert f"(first: row {where['row']}, video {video_name(1)}, timestamp {where['stamp']:g})" in msg


def test_a_head_without_objects_does_not_load_object_features(tmp_path):
    """objects=False leaves base/object_feature unread (so its NaN/Inf do not matter either); the
    objects keep their boxes and classes, with 0-d features."""
    path = str(tmp_path / "noobj.zarr")

    def arrays_of(v, va):
        base = dict(va["base"])
        base["object_feature"] = np.full_like(base["object_feature"], np.nan)
        return {"base": base, "a": {"actor_pooled": va["pooled"]}}

    _write(path, 2, ["a"], arrays_of)
    with pytest.raises(NonFiniteError, match="array object_feature"):
        load_split(path, boxes="gt", score_threshold=0.0, levels=[], device=CPU)
    _, tables, g = load_split(path, boxes="gt", score_threshold=0.0, levels=[], device=CPU, objects=False,
                              num_object_classes=len(OBJECT_CLASSES))
    # The tables keep only what validation reads (split_read.KEEP_IN_TABLES): the graph holds the rest.
    st = open_store(path)
    boxes = st.load({"base": ["object_box"]}).data["base/object_box"]
    assert "base/object_feature" not in tables.data
    assert g.object_feat.shape == (len(boxes), 0)
    assert torch.equal(g.object_box, boxes.float())
    st = open_store(path)
    assert feature_dims(st, backbone_groups(st, []), "mean") == (8, 4)  # what a head is built with


def test_reads_objects_follows_the_declared_requires():
    from stagecache.heads import build_head

    assert reads_objects(build_head("stage", actor_dim=8, object_dim=8, num_classes=2))
    assert not reads_objects(build_head("stage", actor_dim=8, object_dim=8, num_classes=2, use_objects=False))
    assert not reads_objects(build_head("linear", actor_dim=8, object_dim=8, num_classes=2))


# ----------------------------------------------------------------------------- stores

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("pf")
    return (write_store(d / "train.zarr", levels=("kf_context",)),
            write_store(d / "val.zarr", split="val", videos=("vc",), levels=("kf_context",)))


def _args(train_store, val_store, out, **kw):
    return TrainArgs(**(dict(train_store=train_store, val_store=val_store, head="linear", out_dir=str(out),
                             epochs=1, progress=False, val_score_threshold=0.5) | kw))


def test_good_stores_pass(good, tmp_path):
    preflight_train(_args(*good, tmp_path / "run"))
    preflight_train(_args(*good, tmp_path / "run", head="acrn", head_args={"relation_dim": 4, "out_dim": 4}))
    assert not (tmp_path / "run").exists()  # preflight writes nothing


def test_nan_features_are_found_as_train_loads_naming_store_group_array_and_video(good, tmp_path):
    """Preflight reads no feature array (that would read the store twice); train() finds NaN/Inf
    as it loads each split, before it writes anything."""
    bad = write_store(tmp_path / "nan.zarr", nan_at=("vb", "actor_pooled", 1))
    preflight_train(_args(bad, good[1], tmp_path / "run"))
    with pytest.raises(NonFiniteError) as e:
        train(_args(bad, good[1], tmp_path / "run"))
    msg = str(e.value)
    assert f"train store {bad}: group feat, array actor_pooled: 1 row(s) with NaN/Inf" in msg
    assert "row 5, video vb, timestamp 902" in msg  # vb starts at row 4; row 1 of vb is keyframe 902's proposal
    bad = write_store(tmp_path / "nanbox.zarr", split="val", videos=("vc",), nan_at=("vc", "actor_box", 0))
    with pytest.raises(NonFiniteError, match=r"val store .*nanbox.zarr: group base, array actor_box: 1 row"):
        train(_args(good[0], bad, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_dimension_mismatch_between_train_and_val(good, tmp_path):
    val = write_store(tmp_path / "v16.zarr", split="val", videos=("vc",), dim=16, levels=("kf_context",))
    with pytest.raises(PreflightError, match=r"feature dims differ: train store .*train.zarr group feat array "
                                             r"actor_pooled is \[8\], val store .*v16.zarr is \[16\]"):
        preflight_train(_args(good[0], val, tmp_path / "run"))


def test_a_level_the_head_requires_is_missing(good, tmp_path):
    plain = write_store(tmp_path / "plain.zarr")
    with pytest.raises(PreflightError, match=r"train store .*plain.zarr: group feat has no array kf_context, "
                                             r"which the head needs; extract it with --save context"):
        preflight_train(_args(plain, good[1], tmp_path / "run", head="acrn"))


def test_label_names_must_agree(good, tmp_path):
    other = write_store(tmp_path / "names.zarr", split="val", videos=("vc",), label_names=["stand", "sit", "run"],
                        levels=("kf_context",))
    with pytest.raises(PreflightError, match=r"different label_names"):
        preflight_train(_args(good[0], other, tmp_path / "run"))


def test_bank_group_and_bank_head_go_together(good, tmp_path):
    with pytest.raises(HeadArgError, match="--bank-group acfb needs a head built with a bank"):
        preflight_train(_args(*good, tmp_path / "run", bank_group="acfb"))
    with pytest.raises(HeadArgError, match="head acar with bank=true needs --bank-group"):
        preflight_train(_args(*good, tmp_path / "run", head="acar", head_args={"bank": True}))
    with pytest.raises(PreflightError, match=r"train store .*: no group acfb with array actor_maps"):
        preflight_train(_args(*good, tmp_path / "run", head="acar", head_args={"bank": True}, bank_group="acfb"))


def test_unknown_backbone_and_empty_selection(good, tmp_path):
    with pytest.raises(PreflightError, match=r"train store .*: no group 'sf' with array actor_pooled"):
        preflight_train(_args(*good, tmp_path / "run", backbones=["sf"]))
    with pytest.raises(PreflightError, match=r"val store .*: no actors with --val-boxes proposals and "
                                             r"--val-score-threshold 0.95 \(2 GT rows, 2 proposal rows\)"):
        preflight_train(_args(*good, tmp_path / "run", val_score_threshold=0.95))


def test_train_fails_before_creating_the_run_directory(good, tmp_path):
    bad = write_store(tmp_path / "nan.zarr", nan_at=("va", "actor_pooled", 0))
    with pytest.raises(NonFiniteError):
        train(_args(bad, good[1], tmp_path / "a" / "run"))
    assert not (tmp_path / "a").exists()
    with pytest.raises(HeadArgError, match="no option 'nope'"):
        train(_args(*good, tmp_path / "a" / "run", head_args={"nope": 1}))
    assert not (tmp_path / "a").exists()


def test_run_checkpoints_hold_only_tensors_and_plain_values(good, tmp_path):
    import torch

    train(_args(*good, tmp_path / "run"))
    for name in ("last.pt", "best.pt"):  # plain weights_only: not even numpy scalars are admitted
        ckpt = torch.load(tmp_path / "run" / name, weights_only=True)
        assert set(ckpt) >= {"model", "config"}


def test_predict_checks_the_store_against_the_run(good, tmp_path):
    train(_args(*good, tmp_path / "run"))
    check_predict(str(tmp_path / "run"), "best.pt", good[1])
    with pytest.raises(PreflightError, match=r"last2.pt not found: is .* a finished train-head run"):
        check_predict(str(tmp_path / "run"), "last2.pt", good[1])
    other = write_store(tmp_path / "o.zarr", split="val", videos=("vc",), label_names=["a", "b", "c"])
    # same ids, other names: the columns would line up, but the classes are not the run's (issue 31)
    with pytest.raises(PreflightError, match=r"o.zarr names its classes unlike the run .*id 1: 'a' in the store"):
        check_predict(str(tmp_path / "run"), "best.pt", other)
    wide = write_store(tmp_path / "w.zarr", split="val", videos=("vc",), dim=4)
    with pytest.raises(PreflightError, match=r"predict store .*w.zarr: groups \['feat'\] give 4-d actor features"):
        check_predict(str(tmp_path / "run"), "best.pt", wide)


def test_predict_refuses_nan_features(good, tmp_path):
    from stagecache.pipelines.training.predict import PredictArgs, predict

    train(_args(*good, tmp_path / "run"))
    bad = write_store(tmp_path / "nan.zarr", split="val", videos=("vc",), nan_at=("vc", "actor_pooled", 3))
    out = tmp_path / "preds" / "p.csv"
    with pytest.raises(NonFiniteError, match=r"predict store .*nan.zarr: group feat, array actor_pooled: 1 row"):
        predict(PredictArgs(run_dir=str(tmp_path / "run"), store=bad, out=str(out), device="cpu"))
    assert not out.parent.exists()
