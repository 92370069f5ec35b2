import json

import numpy as np
import pytest
import torch
from torch import nn

from stagecache.extract import ava_io
from stagecache.core.errors import UserError
from stagecache.heads import HEADS, HeadBase
from stagecache.pipelines.training.train import train
from tests.pipelines.training.relational_helpers import small_stage_args as _args, small_store_pair


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return small_store_pair(tmp_path_factory.mktemp("syn"), train_videos=4, val_videos=2, keyframes=12)


def test_run_directory_holds_config_metrics_checkpoints_predictions(stores, tmp_path):
    summary = train(_args(stores, tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "val_predictions.csv", "per_class_ap.json"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["head"] == "stage" and config["lr"] == 1e-3 and config["temporal_radius"] == 1.0
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3]
    # Where the time goes: gathering batches, the optimisation step, validation.
    for l in lines:
        assert l["data_seconds"] > 0 and l["step_seconds"] > 0 and l["val_seconds"] > 0
        assert l["data_seconds"] + l["step_seconds"] <= l["train_seconds"] * 1.01 + 1e-3
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


def test_resume_with_other_options_is_refused(stores, tmp_path):
    from stagecache.pipelines.training.run_dir import ResumeMismatchError

    train(_args(stores, tmp_path / "r", epochs=1))
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(ResumeMismatchError, match=r"lr=0\.001 -> 0\.01.*new --out-dir"):
        train(_args(stores, tmp_path / "r", epochs=2, lr=1e-2, resume=True))
    assert (tmp_path / "r" / "last.pt").read_bytes() == before  # nothing written
    with pytest.raises(ResumeMismatchError, match="head_args"):
        train(_args(stores, tmp_path / "r", epochs=2, resume=True, head_args={"num_layers": 2, "num_heads": 2}))
    train(_args(stores, tmp_path / "r", epochs=2, resume=True))  # more epochs: continues
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


def test_a_run_of_the_previous_release_resumes(stores, tmp_path):
    """Its config.json lacks the keys recorded since (label_names, excluded, environment, the split
    source options): absent keys are the new defaults, so the run continues."""
    train(_args(stores, tmp_path / "r", epochs=1))
    path = tmp_path / "r" / "config.json"
    cfg = json.loads(path.read_text())
    for k in ("label_names", "excluded", "environment", "memory_budget", "split_source", "layer"):
        cfg.pop(k, None)
    path.write_text(json.dumps(cfg))
    train(_args(stores, tmp_path / "r", epochs=2, resume=True))
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    cfg["lr"] = 0.5  # a recorded option that differs is still refused
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"lr=0\.5 -> 0\.001"):
        train(_args(stores, tmp_path / "r", epochs=3, resume=True))


class _NaNHead(HeadBase):
    temporal_radius = 0.0
    requires = frozenset()

    def __init__(self, actor_dim, object_dim, num_classes):
        super().__init__()
        self.fc = nn.Linear(actor_dim, num_classes)

    def forward(self, x):
        return self.fc(x.actor_feat) * float("nan")


def test_non_finite_loss_stops_the_run(stores, tmp_path, monkeypatch):
    monkeypatch.setitem(HEADS, "nan", lambda **kw: _NaNHead(**kw))
    with pytest.raises(FloatingPointError, match="non-finite loss") as e:
        train(_args(stores, tmp_path / "nan", head="nan", head_args={}))
    assert isinstance(e.value, UserError)  # the CLI prints one `Error:` line, no traceback


def test_bad_arguments_are_refused(stores, tmp_path):
    with pytest.raises(ValueError, match="valid heads"):
        _args(stores, tmp_path, head="nope")
    with pytest.raises(ValueError, match="train_boxes"):
        _args(stores, tmp_path, train_boxes="all")


def test_random_sampling_resumes_too_and_unknown_sampling_is_refused(stores, tmp_path):
    a = train(_args(stores, tmp_path / "straight", sampling="random", epochs=2))
    train(_args(stores, tmp_path / "killed", sampling="random", epochs=1))
    b = train(_args(stores, tmp_path / "killed", sampling="random", epochs=2, resume=True))
    assert a["best_val_map"] == b["best_val_map"]
    with pytest.raises(ValueError, match="valid: blocks, random"):
        _args(stores, tmp_path, sampling="shuffled")


def test_cpu_bf16_autocast_trains_close_to_float32(stores, tmp_path):
    a = train(_args(stores, tmp_path / "fp32", epochs=1))
    b = train(_args(stores, tmp_path / "bf16", epochs=1, cpu_bf16=True))
    la = json.loads((tmp_path / "fp32" / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]
    lb = json.loads((tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]
    assert la != lb and abs(la - lb) < 0.05 * la  # bfloat16 matmuls ran, and trained the same model
    assert np.isfinite(a["best_val_map"]) and np.isfinite(b["best_val_map"])


def test_a_head_without_objects_records_the_dims_it_was_built_with(stores, tmp_path):
    """linear reads no object features (they are not loaded), yet its config holds the store's
    object dim, as the head was built with it, so the run resumes and reloads as before."""
    from stagecache.extract.store import open_store
    from stagecache.pipelines.training.run_dir import load_trained
    from stagecache.pipelines.training.split import backbone_groups, feature_dims

    lin = dict(head="linear", head_args={})
    train(_args(stores, tmp_path / "lin", epochs=1, **lin))
    cfg = json.loads((tmp_path / "lin" / "config.json").read_text())
    st = open_store(stores[0])
    assert (cfg["actor_dim"], cfg["object_dim"]) == feature_dims(st, backbone_groups(st, []), "mean")
    assert cfg["object_dim"] > 0
    train(_args(stores, tmp_path / "lin", epochs=2, resume=True, **lin))
    load_trained(str(tmp_path / "lin"), torch.device("cpu"))
