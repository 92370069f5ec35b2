"""A run directory documents itself: where and how it ran (config.json's `environment`), its
console lines (train.log, appended across --resume), its curves (curves.png, rewritten each epoch),
per-class AP with class names, and the line before the first epoch."""
import json
import subprocess
from importlib import metadata

import matplotlib.image
import pytest
import torch

from stagecache.extract.store import open_store
from stagecache.pipelines.training import run_info
from stagecache.pipelines.training.run_dir import load_trained
from stagecache.pipelines.training.train import train
from tests.pipelines.training.relational_helpers import small_stage_args as _args, small_store_pair


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return small_store_pair(tmp_path_factory.mktemp("docs"), train_videos=4, val_videos=2, keyframes=12)


def _git(*args):
    out = subprocess.run(["git", "-C", str(run_info.PACKAGE_ROOT), *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def test_run_directory_documents_itself_and_resume_appends(stores, tmp_path, capsys):
    run = tmp_path / "run"
    train(_args(stores, run, epochs=1, device="cpu"))
    png1 = (run / "curves.png").read_bytes()
    env = json.loads((run / "config.json").read_text())["environment"]
    assert env["device"] == "cpu" and env["precision"] == "float32"
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["package_version"] == metadata.version("stagecache")
    commit = _git("rev-parse", "HEAD")
    assert env["git_commit"] == commit  # None where the package is not a git checkout
    assert (env["git_dirty"] is None) == (commit is None)
    err = capsys.readouterr().err
    head, _ = load_trained(run, torch.device("cpu"))
    n_params = sum(p.numel() for p in head.parameters())
    start = next(line for line in err.splitlines() if line.startswith("[stage] device"))
    assert f"head {n_params:,} parameters" in start and "reads synthetic: pooled, objects" in start
    assert "train 48 keyframes / " in start and "val 24 keyframes / " in start  # 4 x 12 and 2 x 12 keyframes
    assert "[stage] epoch 1: loss" in err

    train(_args(stores, run, epochs=2, resume=True))  # appends to train.log, redraws the curves
    log = (run / "train.log").read_text().splitlines()
    at = lambda text: [i for i, line in enumerate(log) if text in line]  # noqa: E731
    (e1,), (e2,), (resumed,) = at("[stage] epoch 1:"), at("[stage] epoch 2:"), at("resuming")
    assert e1 < at("done: best val mAP")[0] < resumed < e2 and at("done: best val mAP")[1] == len(log) - 1
    assert len(at("[stage] device cpu")) == 2  # each session says where it runs
    assert (run / "curves.png").read_bytes() != png1
    img = matplotlib.image.imread(run / "curves.png")
    assert img.shape[0] > 200 and img.shape[1] > 600
    ap = json.loads((run / "per_class_ap.json").read_text())
    names = open_store(stores[1]).attrs["label_names"]
    ids = open_store(stores[1]).attrs["label_ids"]
    assert ap["class_names"] == {str(i): n for i, n in zip(ids, names)}


def test_cpu_bf16_is_recorded(stores, tmp_path):
    train(_args(stores, tmp_path / "bf", epochs=1, device="cpu", cpu_bf16=True, tensorboard=False))
    env = json.loads((tmp_path / "bf" / "config.json").read_text())["environment"]
    assert env["precision"] == "cpu_bf16 (bfloat16 autocast)"


def test_no_git_checkout_gives_nulls_not_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(run_info, "PACKAGE_ROOT", tmp_path)  # an installed package: no checkout of its own
    assert run_info.git_state() == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git program at all
    assert run_info.git_state() == (None, None)
