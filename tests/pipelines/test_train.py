import json

import numpy as np
import pytest
import torch
from torch import nn

from extract import ava_io
from heads import HEADS
from pipelines.train import PredictArgs, TrainArgs, predict, train
from tests.pipelines.relational_helpers import small_store_pair


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return small_store_pair(tmp_path_factory.mktemp("syn"), train_videos=4, val_videos=2, keyframes=12)


def _args(stores, out, **kw):
    base = dict(train_store=stores[0], val_store=stores[1], head="stage", out_dir=str(out), epochs=3, batch_size=8,
                lr=1e-3, progress=False, val_score_threshold=0.5, early_stop=100,
                head_args={"num_layers": 1, "num_heads": 2})
    return TrainArgs(**(base | kw))


def test_run_directory_holds_config_metrics_checkpoints_predictions(stores, tmp_path):
    summary = train(_args(stores, tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "val_predictions.csv", "per_class_ap.json"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["head"] == "stage" and config["lr"] == 1e-3 and config["temporal_radius"] == 1.0
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3]
    assert summary["best_val_map"] == max(l["val_map"] for l in lines)
    preds = ava_io.read_predictions(run / "val_predictions.csv")
    assert len(preds.video) > 0 and set(np.unique(preds.action)) <= {1, 2, 3, 4, 5, 6, 7}
    assert np.all((preds.score >= 0) & (preds.score <= 1))
    # A second run into the same directory without --resume is refused rather than overwriting.
    with pytest.raises(FileExistsError, match="resume"):
        train(_args(stores, run))


def test_resume_gives_the_uninterrupted_result(stores, tmp_path):
    train(_args(stores, tmp_path / "straight"))
    train(_args(stores, tmp_path / "killed", epochs=1))  # as if killed after epoch 1
    train(_args(stores, tmp_path / "killed", resume=True))
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=False)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    strip = lambda h: [{k: v for k, v in r.items() if "second" not in k and "per_s" not in k} for r in h]  # noqa: E731
    assert strip(a["state"]["history"]) == strip(b["state"]["history"])
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]


class _NaNHead(nn.Module):
    temporal_radius = 0.0
    requires = frozenset()

    def __init__(self, actor_dim, object_dim, num_classes):
        super().__init__()
        self.fc = nn.Linear(actor_dim, num_classes)

    def forward(self, x):
        return self.fc(x.actor_feat) * float("nan")


def test_non_finite_loss_stops_the_run(stores, tmp_path, monkeypatch):
    monkeypatch.setitem(HEADS, "nan", lambda **kw: _NaNHead(**kw))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(_args(stores, tmp_path / "nan", head="nan", head_args={}))


def test_predict_reproduces_the_val_predictions(stores, tmp_path):
    train(_args(stores, tmp_path / "run", epochs=1))
    out = predict(PredictArgs(run_dir=str(tmp_path / "run"), store=stores[1], out=str(tmp_path / "p.csv"),
                              score_threshold=0.5, device="cpu"))
    a = ava_io.read_predictions(out)
    b = ava_io.read_predictions(tmp_path / "run" / "val_predictions.csv")
    assert list(a.video) == list(b.video)
    np.testing.assert_allclose(a.score, b.score, atol=1e-5)


def test_bad_arguments_are_refused(stores, tmp_path):
    with pytest.raises(ValueError, match="valid heads"):
        _args(stores, tmp_path, head="nope")
    with pytest.raises(ValueError, match="train_boxes"):
        _args(stores, tmp_path, train_boxes="all")
