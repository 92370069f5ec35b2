import json

import numpy as np
import pytest
import torch
from torch import nn

from stagecache.core.errors import UserError
from stagecache.heads import build_head
from stagecache.pipelines.training.balanced import (balanced_keyframe_weights, classifier_parameters, retrain_classifier_balanced,
                                sample_keyframes)
from stagecache.pipelines.training.run_dir import load_trained
from stagecache.pipelines.training.train import TrainArgs, train
from tests.pipelines.training.relational_helpers import small_store_pair


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return small_store_pair(tmp_path_factory.mktemp("syn"), train_videos=3, val_videos=1, keyframes=8)


def test_only_classifier_parameters_change(stores, tmp_path):
    run = tmp_path / "run"
    train(TrainArgs(train_store=stores[0], val_store=stores[1], head="stage", out_dir=str(run), epochs=1,
                    batch_size=8, lr=1e-3, progress=False, val_score_threshold=0.5,
                    head_args={"num_layers": 1, "num_heads": 2}))
    summary = retrain_classifier_balanced(run, epochs=2, lr=1e-2, device="cpu")
    bal = run / "balanced"
    assert summary["run_dir"] == str(bal)
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "val_predictions.csv", "per_class_ap.json",
                 "summary.json"):
        assert (bal / name).exists(), name
    assert [json.loads(l)["epoch"] for l in (bal / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    before = torch.load(run / "best.pt", weights_only=False)["model"]
    after = torch.load(bal / "last.pt", weights_only=False)["model"]
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}
    head, cfg = load_trained(bal, torch.device("cpu"))  # the balanced run is a run like any other
    assert cfg["retrain_classifier"] == "balanced" and cfg["source_run"] == str(run)
    with pytest.raises(FileExistsError):
        retrain_classifier_balanced(run, epochs=1, device="cpu")
    with pytest.raises(UserError, match="already holds a retrained classifier"):  # the CLI's one-line error path
        retrain_classifier_balanced(run, epochs=1, device="cpu")


def test_classifier_parameters_prefers_the_heads_own_list():
    tonly = build_head("tonly", actor_dim=8, object_dim=4, num_classes=3, d_model=8, nhead=2, dim_feedforward=8)
    assert [id(p) for p in classifier_parameters(tonly)] == [id(p) for p in tonly.classifier.parameters()]

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

        def classifier_parameters(self):
            return self.out.parameters()

    c = Custom()
    assert [id(p) for p in classifier_parameters(c)] == [id(p) for p in c.out.parameters()]


def _skewed(seed=0, n_kf=300, n_cls=4):
    """One to three actors per keyframe; class c is carried with probability ~ 0.7 * 0.3^c."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, n_kf)
    actor_kf = np.repeat(np.arange(n_kf), counts)
    p = 0.7 * 0.3 ** np.arange(n_cls)
    labels = (rng.random((len(actor_kf), n_cls)) < p).astype(np.uint8)
    return torch.from_numpy(labels), torch.from_numpy(actor_kf)


def test_weights_are_the_mean_inverse_frequency_of_the_labels():
    labels, actor_kf = _skewed(n_kf=40)
    queries = torch.arange(40)
    w = balanced_keyframe_weights(labels, actor_kf, queries)
    freq = labels.sum(0).double()
    for q in range(40):  # reference: a direct loop over (actor, label) pairs
        inv = [1.0 / float(freq[c]) for a in torch.nonzero(actor_kf == q).flatten().tolist()
               for c in torch.nonzero(labels[a]).flatten().tolist()]
        want = sum(inv) / len(inv) if inv else 1.0 / float(freq.max())
        torch.testing.assert_close(float(w[q]), want, rtol=1e-6, atol=0)


def test_balanced_sampling_flattens_the_class_frequencies():
    labels, actor_kf = _skewed()
    queries = torch.arange(int(actor_kf.max()) + 1)

    def class_freq(order):
        per_kf = torch.zeros(len(queries), labels.shape[1]).index_add_(0, actor_kf, labels.float())
        f = per_kf[order].sum(0)
        return f / f.sum()

    gen = torch.Generator().manual_seed(0)
    uniform = class_freq(queries[torch.randint(len(queries), (20 * len(queries),), generator=gen)])
    w = balanced_keyframe_weights(labels, actor_kf, queries)
    order = torch.cat([sample_keyframes(queries, w, torch.Generator().manual_seed(s)) for s in range(20)])
    balanced = class_freq(order)
    assert uniform.max() / uniform.min() > 10  # the store really is skewed
    assert balanced.max() / balanced.min() < uniform.max() / uniform.min() / 3
    assert balanced.std() < uniform.std()
    # Seeded: the same generator seed draws the same keyframes.
    a = sample_keyframes(queries, w, torch.Generator().manual_seed(7))
    b = sample_keyframes(queries, w, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_cli_retrains_into_balanced(stores, tmp_path):
    from click.testing import CliRunner

    from stagecache.pipelines.commands.train import train_head_cli

    run = tmp_path / "cli"
    res = CliRunner().invoke(train_head_cli, [
        "--head", "linear", "--train-store", stores[0], "--val-store", stores[1], "--out", str(run),
        "--epochs", "1", "--val-score-threshold", "0.5", "--device", "cpu", "--no-progress",
        "--retrain-classifier", "balanced", "--retrain-epochs", "1"])
    assert res.exit_code == 0, res.output
    assert "class-balanced classifier" in res.output
    assert json.loads((run / "balanced" / "config.json").read_text())["retrain_epochs"] == 1
