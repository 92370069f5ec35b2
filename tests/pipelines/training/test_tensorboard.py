"""pipelines/training/tensorboard.py: a run's event files hold exactly its metrics.jsonl values, a
resumed run's included (no duplicate step, nothing of the epochs the killed run did not commit)."""
import json
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stagecache.pipelines.training.tensorboard import SCALARS, class_tag, write_hparams
from stagecache.pipelines.training.train import train
from tests.pipelines.training.relational_helpers import small_stage_args as _args, small_store_pair


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return small_store_pair(tmp_path_factory.mktemp("tb"), train_videos=3, val_videos=2, keyframes=8)


def _events(run) -> EventAccumulator:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def _curves(run) -> dict[str, list[tuple[int, float]]]:
    acc = _events(run)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(run) -> dict[str, list[tuple[int, float]]]:
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return {tag: [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in lines] for key, tag in SCALARS.items()}


def _check(run):
    got = _curves(run)
    want = _expected(run)
    assert {t: got[t] for t in want} == want  # every scalar, once per committed epoch, equal to metrics.jsonl
    best = json.loads((run / "summary.json").read_text())["best_epoch"]
    per_class = json.loads((run / "per_class_ap.json").read_text())["per_class"]
    logged = {t: v for t, v in got.items() if t.startswith("val_ap_at_best/")}
    assert logged, "no per-class AP was logged"
    for k, ap in per_class.items():
        if ap is None:
            continue
        tag = next(t for t in logged if t == class_tag(k) or t.startswith(class_tag(k) + " "))
        assert logged[tag][-1] == (best, pytest.approx(ap, rel=1e-6)), tag
    return got


def test_event_files_equal_metrics_jsonl(stores, tmp_path):
    run = tmp_path / "run"
    train(_args(stores, run))
    got = _check(run)
    assert [s for s, _ in got["val/mAP"]] == [1, 2, 3] and len({v for _, v in got["train/loss"]}) > 1


def test_a_resumed_run_continues_the_same_curves_without_duplicates(stores, tmp_path):
    run = tmp_path / "run"
    train(_args(stores, run, epochs=1))
    # What a run killed during epoch 2 may have logged before its commit point (last.pt): the
    # resumed run redoes epoch 2, so none of this may survive.
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run)) as w:
        w.add_scalar("val/mAP", 123.0, 2)
        w.add_scalar("train/loss", -1.0, 2)
        w.add_scalar(class_tag(1), 0.5, 2)
    train(_args(stores, run, epochs=3, resume=True))
    got = _check(run)
    assert all(v != 123.0 for _, v in got["val/mAP"]) and [s for s, _ in got["val/mAP"]] == [1, 2, 3]
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3]


def test_no_tensorboard_writes_no_event_file(stores, tmp_path):
    run = tmp_path / "run"
    train(_args(stores, run, epochs=1, tensorboard=False))
    assert not list(run.glob("events.out.tfevents.*"))
    train(_args(stores, run, epochs=2, resume=True))  # switching it on for the rest is allowed
    assert list(run.glob("events.out.tfevents.*"))


def test_hparams_summary_reads_back(tmp_path):
    write_hparams(tmp_path, {"head": "stage", "num_layers": 2, "dropout": 0.1, "temporal": False, "grid": (1, 2)},
                  {"hparam/best_val_map": 0.25})
    acc = _events(tmp_path)
    assert acc.Scalars("hparam/best_val_map")[0].value == pytest.approx(0.25)
    plugin = acc.PluginTagToContent("hparams")
    assert plugin and not math.isnan(acc.Scalars("hparam/best_val_map")[0].value)
