"""The small train/val store pair every ablate test sweeps over."""
import pytest


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from stagecache.extract.synthetic import make_feature_store

    d = tmp_path_factory.mktemp("stores")
    tr = make_feature_store(d / "train.zarr", split="train", seed=0, n_videos=2, keyframes_per_video=4,
                            actor_dim=16, object_dim=8)
    va = make_feature_store(d / "val.zarr", split="val", seed=1, n_videos=1, keyframes_per_video=4,
                            actor_dim=16, object_dim=8)
    return str(tr), str(va)
