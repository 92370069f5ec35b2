"""`feature_dims` (the dims a head is built with, read from store metadata before loading) agrees
with the tensors `load_split` then builds."""
import numpy as np
import torch

from extract.store import StoreWriter, open_store
from extract.synthetic import LABEL_IDS, LABEL_NAMES, OBJECT_CLASSES, make_feature_store, video_arrays, video_name
from pipelines.split_load import backbone_groups, feature_dims, load_split, object_class_count

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


def test_dims_of_two_backbones_and_objects_without_features(tmp_path):
    """concat adds the backbones' widths; object boxes without features become a one-hot of the class."""
    path = str(tmp_path / "two.zarr")
    with StoreWriter(path, split="train", label_ids=LABEL_IDS, label_names=LABEL_NAMES,
                     object_classes=OBJECT_CLASSES) as w:
        w.declare_group("base", {"source": "test"})
        w.declare_group("a", {"backbone": "a"})
        w.declare_group("b", {"backbone": "b"})
        va = video_arrays(0, "train", 0, 3, actor_dim=8, object_dim=4)
        counts = dict(timestamps=va["timestamps"], actor_counts=va["actor_counts"], object_counts=va["object_counts"])
        base = {k: v for k, v in va["base"].items() if k != "object_feature"}
        w.add_video("base", video_name(0), arrays=base, **counts)
        w.add_video("a", video_name(0), arrays={"actor_pooled": va["pooled"]}, **counts)
        w.add_video("b", video_name(0), arrays={"actor_pooled": np.ones((len(va["pooled"]), 6), np.float16)}, **counts)
    store = open_store(path)
    n_cls = object_class_count(path)
    assert n_cls == len(OBJECT_CLASSES)
    want = feature_dims(store, ["a", "b"], "concat", n_cls)
    assert want == (14, n_cls) == _loaded_dims(path, ["a", "b"], "concat", n_cls)
    assert feature_dims(store, ["a", "b"], "concat") == (14, 0) == _loaded_dims(path, ["a", "b"], "concat")
