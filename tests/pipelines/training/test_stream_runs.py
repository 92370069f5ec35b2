"""train-head over streamed splits: equal to resident under blocks sampling, resumable after a kill
mid-epoch, refused in one line when the budget is too small."""
import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from stagecache.pipelines.training.sources import PreflightError
from stagecache.pipelines.training.train import train
from tests.pipelines.training.relational_helpers import small_stage_args, small_store_pair
from tests.pipelines.training.stream_helpers import stream_budget as _budget


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return small_store_pair(tmp_path_factory.mktemp("syn"), train_videos=4, val_videos=2, keyframes=12)


def _args(stores, out, **kw):
    return small_stage_args(stores, out, **({"sampling": "blocks", "epochs": 3} | kw))


def _strip(history):
    return [{k: v for k, v in r.items() if "second" not in k and "per_s" not in k} for r in history]


def _same_run(a, b):
    a, b = (torch.load(p / "last.pt", weights_only=False) for p in (a, b))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert _strip(a["state"]["history"]) == _strip(b["state"]["history"])


def test_streamed_train_head_equals_resident_under_blocks(stores, tmp_path):
    budget = str(_budget(stores))
    train(_args(stores, tmp_path / "res", split_source="resident"))
    train(_args(stores, tmp_path / "str", split_source="streamed", memory_budget=budget))
    _same_run(tmp_path / "res", tmp_path / "str")
    assert (tmp_path / "res" / "val_predictions.csv").read_bytes() == (tmp_path / "str" / "val_predictions.csv").read_bytes()
    log = (tmp_path / "str" / "train.log").read_text()
    assert "train split" in log and "val split" in log and "streamed (forced" in log and "two chunks of up to" in log
    assert "resident (" in (tmp_path / "res" / "train.log").read_text()


def test_predict_reads_a_streamed_store_as_a_resident_one(stores, tmp_path, capsys):
    """predict's --split-source / --memory-budget: the same predictions CSV from several chunks."""
    from stagecache.pipelines.training.predict import PredictArgs, predict

    budget = str(_budget(stores))
    run = tmp_path / "run"
    train(_args(stores, run, epochs=1))
    for src, b in (("resident", ""), ("streamed", budget)):
        predict(PredictArgs(run_dir=str(run), store=stores[1], out=str(tmp_path / f"{src}.csv"), device="cpu",
                            split_source=src, memory_budget=b))
        assert f"predict split {stores[1]}: {src}" in capsys.readouterr().err
    assert (tmp_path / "resident.csv").read_bytes() == (tmp_path / "streamed.csv").read_bytes()


def test_kill_mid_streamed_epoch_then_resume_equals_uninterrupted(stores, tmp_path):
    budget = str(_budget(stores))
    from stagecache.pipelines.training import stream

    before = stream._CHUNKS_READ[0]
    train(_args(stores, tmp_path / "straight", split_source="streamed", memory_budget=budget))
    chunks = stream._CHUNKS_READ[0] - before
    assert chunks >= 9  # several chunks per epoch (train and val)
    killed = tmp_path / "killed"
    args = {k: v for k, v in asdict(_args(stores, killed, split_source="streamed", memory_budget=budget,
                                          progress=False)).items()}
    # The child computes with this process's thread count: CPU float results depend on it.
    code = ("import json, sys, torch\nfrom stagecache.pipelines.training.train import TrainArgs, train\n"
            f"torch.set_num_threads({torch.get_num_threads()})\ntrain(TrainArgs(**json.loads(sys.argv[1])))\n")
    env = os.environ | {"STAGECACHE_KILL_AFTER_CHUNKS": str(chunks // 2 + 1)}  # in the middle of epoch 2
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]  # killed inside epoch 2
    train(_args(stores, killed, split_source="streamed", memory_budget=budget, resume=True))
    _same_run(tmp_path / "straight", killed)


def test_a_budget_below_a_video_is_refused_before_anything_is_written(stores, tmp_path):
    with pytest.raises(PreflightError) as e:
        train(_args(stores, tmp_path / "run", split_source="streamed", memory_budget="20K"))
    msg = str(e.value)
    assert "\n" not in msg and "largest video syn_0" in msg and "--memory-budget" in msg
    assert not (tmp_path / "run" / "last.pt").exists()
    with pytest.raises(PreflightError, match="resident needs .* use --split-source streamed"):
        train(_args(stores, tmp_path / "run2", split_source="resident", memory_budget="20K"))
    with pytest.raises(ValueError, match="memory size"):
        _args(stores, tmp_path / "run3", memory_budget="lots")
