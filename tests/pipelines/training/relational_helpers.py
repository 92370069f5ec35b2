"""Synthetic store pairs shared by the pipeline tests.

`small_store_pair`: tiny train/val stores for tests of the training machinery (`small_stage_args`:
the run they are trained with). The rest: the
relational-store setting shared by test_relational.py (STAGE) and test_relational_heads.py.

Train store 16 videos x 30 keyframes (store seed = run seed), val store 5 x 30 (videos 100-104),
64-d actors, 32-d objects; 8 epochs, batch 8, lr 3e-3, val proposals with score >= 0.5, no early
stop, CPU.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from stagecache.extract.synthetic import make_feature_store
from stagecache.pipelines.training.train import TrainArgs, train


def small_store_pair(root: Path, *, train_videos: int, val_videos: int, keyframes: int) -> tuple[str, str]:
    """Train (seed 0) and val (seed 1, videos from 50) feature stores, 16-d actors, 8-d objects."""
    kw = dict(keyframes_per_video=keyframes, actor_dim=16, object_dim=8)
    make_feature_store(root / "train.zarr", split="train", seed=0, n_videos=train_videos, **kw)
    make_feature_store(root / "val.zarr", split="val", seed=1, n_videos=val_videos, first_video=50, **kw)
    return str(root / "train.zarr"), str(root / "val.zarr")


def small_stage_args(stores: tuple[str, str], out, **kw) -> TrainArgs:
    """A 3-epoch run of a one-layer STAGE head on `small_store_pair` stores; `kw` overrides."""
    base = dict(train_store=stores[0], val_store=stores[1], head="stage", out_dir=str(out), epochs=3, batch_size=8,
                lr=1e-3, progress=False, val_score_threshold=0.5, early_stop=100,
                head_args={"num_layers": 1, "num_heads": 2})
    return TrainArgs(**(base | kw))


def relational_stores(d: Path, seed: int, levels: tuple[str, ...] = ()) -> tuple[Path, Path]:
    kw = dict(seed=seed, keyframes_per_video=30, actor_dim=64, object_dim=32, levels=levels)
    tr = make_feature_store(d / "train.zarr", split="train", n_videos=16, **kw)
    va = make_feature_store(d / "val.zarr", split="val", n_videos=5, first_video=100, **kw)
    return tr, va


def train_per_class_ap(tr, va, run: Path, head: str, head_args: dict, seed: int) -> dict[int, float]:
    """Train one head in the shared setting; its validation AP per class id."""
    train(TrainArgs(train_store=str(tr), val_store=str(va), head=head, head_args=head_args,
                    out_dir=str(run), epochs=8, batch_size=8, lr=3e-3, val_score_threshold=0.5,
                    early_stop=100, seed=seed, device="cpu", progress=False))
    per_class = json.loads((run / "per_class_ap.json").read_text())["per_class"]
    return {int(k): float(v) for k, v in per_class.items()}


def mean_ap(aps, config: str, classes, seeds) -> float:
    """Seed-averaged mean AP of `config` over `classes`."""
    return statistics.fmean(statistics.fmean(aps[config, s][c] for c in classes) for s in seeds)
