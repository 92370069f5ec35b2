"""ablate's runs as submitit jobs (pipelines/ablation/jobs.py) through the LocalExecutor: a sweep
killed (with its jobs) after its first finished run and started again redoes nothing finished and
ends with the results table of an uninterrupted sweep; every run writes its hparams summary."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stagecache.pipelines.ablation.jobs import Run
from stagecache.pipelines.ablation.spec import Config
from stagecache.pipelines.ablation.sweep import AblateArgs, ablate

torch.set_num_threads(1)
FLAGS = dict(heads=["linear"], seeds=[0, 1, 2], epochs=3, batch_size=4, lr=1e-3, device="cpu", progress=False)


def _table(out: Path) -> list[dict]:
    with open(out / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "run_dir"} for row in csv.DictReader(f)]


def _argv(tr, va, out) -> list[str]:
    return ["--train-store", tr, "--val-store", va, "--out", str(out), "--head", "linear", "--seeds", "0,1,2",
            "--epochs", "3", "--batch-size", "4", "--lr", "1e-3", "--device", "cpu", "--no-progress",
            "--executor", "local"]


@pytest.mark.slow  # three job processes, twice, each importing torch: ~40 s on two cores
def test_a_killed_local_sweep_resumes_without_redoing_finished_runs(stores, tmp_path):
    tr, va = stores
    ref = tmp_path / "ref"
    ablate(AblateArgs(train_store=tr, val_store=va, out=str(ref), **FLAGS), echo=lambda m: None)

    out = tmp_path / "out"
    code = ("import sys; from stagecache.pipelines.commands.cli import load_command, run; "
            "run(load_command('ablate'), sys.argv[1:], prog_name='ablate')")
    # its own session: the kill takes the sweep and its local jobs (the sweep's children) together
    proc = subprocess.Popen([sys.executable, "-c", code, *_argv(tr, va, out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(out.glob("runs/*/summary.json")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert finished, "no run finished before the kill"
    assert not (out / "results.csv").exists()  # killed before the tables

    said: list[str] = []
    res = ablate(AblateArgs(train_store=tr, val_store=va, out=str(out), executor="local", **FLAGS), echo=said.append)
    assert set(res["status"].values()) == {"done"}
    for name, mtime in finished.items():
        assert f"[ablate] {name}: finished already, skipped" in said
        assert (out / "runs" / name / "summary.json").stat().st_mtime_ns == mtime  # not trained again
    assert _table(out) == _table(ref)
    # one hparams summary per run, for TensorBoard's HPARAMS view over OUT/runs
    for run_dir in (out / "runs").iterdir():
        events = b"".join(p.read_bytes() for p in run_dir.glob("events.out.tfevents.*"))
        assert b"hparam/best_val_map" in events and b"_hparams_/experiment" in events, run_dir
        assert (run_dir / "hparams.json").exists()


def test_a_runs_hparams_are_flat_scalars():
    c = Config(name="stg-h2", head="stage", head_args={"num_heads": 2, "proximity": False, "dims": [4, 8]},
               grid_values={"num_heads": 2})
    r = Run(config=c, seed=1, run_dir="runs/stg-h2-s1", targs={})
    assert r.hparams() == {"config": "stg-h2", "head": "stage", "seed": 1, "head_args/dims": "[4, 8]",
                           "head_args/num_heads": 2, "head_args/proximity": False, "grid/num_heads": 2}
