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
