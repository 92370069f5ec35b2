"""`feature_dims` (the dims a head is built with, read from store metadata before loading) agrees
with the tensors `load_split` then builds."""
import numpy as np
import pytest
import torch

from stagecache.extract.store import StoreWriter, open_store
from stagecache.extract.synthetic import LABEL_IDS, LABEL_NAMES, OBJECT_CLASSES, make_feature_store, video_arrays, video_name
from stagecache.pipelines.training.split_load import (NonFiniteError, backbone_groups, feature_dims, load_split, nonfinite_rows,
                                  object_class_count)

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
    assert "base/object_feature" not in tables.data and "base/object_box" in tables.data
    assert g.object_feat.shape == (len(tables.data["base/object_box"]), 0)
    assert torch.equal(g.object_box, tables.data["base/object_box"].float())
    st = open_store(path)
    assert feature_dims(st, backbone_groups(st, []), "mean") == (8, 4)  # what a head is built with


def test_reads_objects_follows_the_declared_requires():
    from stagecache.heads import build_head
    from stagecache.pipelines.training.split_load import reads_objects

    assert reads_objects(build_head("stage", actor_dim=8, object_dim=8, num_classes=2))
    assert not reads_objects(build_head("stage", actor_dim=8, object_dim=8, num_classes=2, use_objects=False))
    assert not reads_objects(build_head("linear", actor_dim=8, object_dim=8, num_classes=2))
