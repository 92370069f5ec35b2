"""Random sampling over a streamed split (each epoch its videos shuffled into groups that fit a
chunk, batches drawn within a group: stream.py) against the resident source's independent random
batches, on the relational synthetic worlds (relational_helpers: person-object classes 4-5,
person-person 6, temporal 7): the seed-averaged AP of each class differs by no more than the
seed-to-seed spread (max - min over the seeds, the larger of the two sources'), and is never below
the resident mean by more than the resident spread. Setting: test_relational.py's STAGE (one
layer), chunks of ~4 of the 16 train videos (4 groups per epoch). Measured (seeds 0-3, resident /
streamed mean, resident spread): class 4 0.927 / 0.939 (0.082), 5 0.775 / 0.820 (0.033; streamed
higher on every seed, its own spread 0.075), 6 0.238 / 0.207 (0.291), 7 0.571 / 0.589 (0.306)."""
from __future__ import annotations

import json
import statistics

import pytest
import torch

from stagecache.pipelines.training.train import TrainArgs, train
from tests.pipelines.training.relational_helpers import relational_stores
from tests.pipelines.training.stream_helpers import stream_budget

SEEDS = (0, 1, 2, 3)
CLASSES = (4, 5, 6, 7)


def _ap(tr, va, run, seed: int, **kw) -> dict[int, float]:
    train(TrainArgs(train_store=str(tr), val_store=str(va), head="stage", head_args={"num_layers": 1},
                    out_dir=str(run), epochs=8, batch_size=8, lr=3e-3, val_score_threshold=0.5, early_stop=100,
                    seed=seed, device="cpu", progress=False, tensorboard=False, **kw))
    per_class = json.loads((run / "per_class_ap.json").read_text())["per_class"]
    return {int(k): float(v) for k, v in per_class.items()}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_streamed_random_sampling_ap_is_within_the_seed_spread(tmp_path, one_thread):
    aps = {}
    for seed in SEEDS:
        tr, va = relational_stores(tmp_path / f"s{seed}", seed)
        budget = stream_budget((tr, va), videos_per_chunk=4)
        aps["resident", seed] = _ap(tr, va, tmp_path / f"r{seed}", seed, split_source="resident")
        aps["streamed", seed] = _ap(tr, va, tmp_path / f"s{seed}" / "run", seed, split_source="streamed",
                                    memory_budget=str(budget))
        cfg = json.loads((tmp_path / f"s{seed}" / "run" / "config.json").read_text())
        assert cfg["train_stream_budget"] > 0  # streamed, random: grouped batches
    report = {}
    for c in CLASSES:
        res = [aps["resident", s][c] for s in SEEDS]
        stm = [aps["streamed", s][c] for s in SEEDS]
        report[c] = (statistics.fmean(res), statistics.fmean(stm), max(res) - min(res), max(stm) - min(stm))
    print(json.dumps({"per_seed": {f"{k[0]}{k[1]}": v for k, v in aps.items()}, "class": report}))
    for c, (res, stm, spread_res, spread_stm) in report.items():
        assert abs(stm - res) <= max(spread_res, spread_stm), (c, report)
        assert stm >= res - spread_res, (c, report)
