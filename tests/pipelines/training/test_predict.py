import numpy as np
import pytest

from stagecache.extract import ava_io
from stagecache.pipelines.training.predict import PredictArgs, predict
from stagecache.pipelines.training.train import train
from tests.pipelines.training.relational_helpers import small_stage_args as _args, small_store_pair


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return small_store_pair(tmp_path_factory.mktemp("syn"), train_videos=4, val_videos=2, keyframes=12)


def test_predict_reproduces_the_val_predictions(stores, tmp_path):
    train(_args(stores, tmp_path / "run", epochs=1))
    out = predict(PredictArgs(run_dir=str(tmp_path / "run"), store=stores[1], out=str(tmp_path / "p.csv"),
                              score_threshold=0.5, device="cpu"))
    a = ava_io.read_predictions(out)
    b = ava_io.read_predictions(tmp_path / "run" / "val_predictions.csv")
    assert list(a.video) == list(b.video)
    np.testing.assert_allclose(a.score, b.score, atol=1e-5)


def test_product_scores_multiply_by_the_proposal_score(stores, tmp_path):
    from stagecache.extract.store import open_store

    train(_args(stores, tmp_path / "run", epochs=1))
    kw = dict(run_dir=str(tmp_path / "run"), store=stores[1], boxes="proposals", score_threshold=0.0, device="cpu")
    a = ava_io.read_predictions(predict(PredictArgs(out=str(tmp_path / "a.csv"), **kw)))
    b = ava_io.read_predictions(predict(PredictArgs(out=str(tmp_path / "b.csv"), score="product", **kw)))
    assert list(a.video) == list(b.video) and np.array_equal(a.box, b.box)
    ratio = b.score / np.maximum(a.score, 1e-12)
    t = open_store(stores[1]).load()
    det = t.data["base/actor_score"][~t.data["base/actor_is_gt"].bool()].numpy()
    assert (ratio <= 1 + 1e-5).all() and np.isin(np.round(ratio[a.score > 1e-3], 3), np.round(det, 3)).all()
