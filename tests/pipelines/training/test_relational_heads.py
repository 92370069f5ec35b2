"""The other papers' heads on the synthetic relational store: each beats `linear` where its paper
says it should, by a margin measured here (STAGE has its own file, test_relational.py).

The store (`make_feature_store(levels=("roi", "temporal", "context"))` + `write_tracks`) puts only
pose and identity in the pooled actor feature; the context maps show the whole scene, the RoI maps
what overlaps each box (nearby objects and people, `extract/synthetic/levels.py`), the temporal
tokens the pose over the clip [t-1, t+1], and the tracks link a person's boxes across keyframes.
So, per paper:
- `sonly` (AVA-Kinetics 2021, S-only: relations over the spatial cells of person RoI maps) reads the
  objects next to a person: person-object classes 4 "hold cup" / 5 "ride bike".
- `tonly` (same report, T-only: relations over the time steps of person features) sees the pose of
  the previous second: class 7 "get up". Its position average is order-free, so it cannot tell
  "get up" from "sit down"; it still beats a head that sees only the current pose.
- `igmn` (identity-aware graph memory: an ordered aggregator along each identity's track, memory of
  +-L clips) links a person to its own previous keyframe: class 7.
Setting as test_relational.py (train store 16 videos x 30 keyframes, val 5 x 30, 8 epochs, batch 8,
lr 3e-3, seeds 0 and 1), with widths narrowed for 64-d features (d_model 64; igmn hidden 64,
memory +-3 clips, 2 layers) and T-only without its memory bank (the report's T-only row without
"+M"; the bank is slow on CPU and added +0.02 here).

Measured per-class AP (classes 1-3 are >= 0.998 for every head and seed):
  seed head     4     5     6     7
  0    linear 0.239 0.132 0.199 0.337
  0    sonly  0.630 0.635 0.268 0.307
  0    tonly  0.244 0.136 0.191 0.696
  0    igmn   0.267 0.131 0.191 0.965
  1    linear 0.515 0.207 0.269 0.382
  1    sonly  0.642 0.644 0.433 0.356
  1    tonly  0.573 0.211 0.259 0.660
  1    igmn   0.495 0.220 0.285 0.883
- `acrn`, `acar`, `acar_rn` (actor-context relations over the 16 x 16 context map) read the objects
  around a person: classes 4 / 5, with the options outside their papers that this store needs
  (heads/acrn.py, heads/acar.py): the actor reaches the first-order relation through its box only
  (location embedding with offsets from the box centre; the tiled actor feature is left out), max
  pooling, and in ACRN no L2 normalisation; acar's HR2O with 1x1 convs (CPU time). In the papers'
  form (actor feature tiled, average pooling) they fit the 16 training videos and gain nothing on
  validation (BENCHMARKS.md, "All heads on one synthetic store").
Measured with those options (store seed = run seed, 8 epochs):
  seed head      4     5
  0    acrn     0.614 0.465
  0    acar     0.473 0.227
  0    acar_rn  0.688 0.421
  1    acrn     0.592 0.629
  1    acar     0.504 0.389
  1    acar_rn  0.586 0.560
Not asserted: `sto` and `lfb` (their papers' gains come from relations between actor features
without geometry or order, which the synthetic world's rules do not contain).
"""
from __future__ import annotations

import pytest
import torch

from stagecache.extract.tracking import write_tracks
from tests.pipelines.training import relational_helpers
from tests.pipelines.training.relational_helpers import relational_stores, train_per_class_ap

torch.set_num_threads(1)

# Trains every relation head twice on the relational worlds: ~6 min of the suite on two cores.
pytestmark = pytest.mark.slow

SEEDS = (0, 1)
SMALL_TRANSFORMER = {"d_model": 64, "nhead": 4, "dim_feedforward": 128}
ACAR_LOC = {"reduce_dim": 64, "hidden_dim": 64, "location": True, "relative_location": True,
            "tile_actor": False, "pool": "max"}
CONFIGS = {
    "linear": ("linear", {}),
    "sonly": ("sonly", SMALL_TRANSFORMER),
    "tonly": ("tonly", {**SMALL_TRANSFORMER, "bank_window": 0}),
    "igmn": ("igmn", {"hidden_dim": 64, "memory_clips": 3, "num_layers": 2}),
    "acrn": ("acrn", {"relation_dim": 64, "out_dim": 64, "tile_actor": False, "pool": "max",
                      "relative_location": True, "normalise": False}),
    "acar": ("acar", {**ACAR_LOC, "kernel_size": 1}),
    "acar_rn": ("acar_rn", ACAR_LOC),
}


@pytest.fixture(scope="module")
def aps(tmp_path_factory):
    """{(config, seed): {class id: AP}} for every configuration and seed, each trained once."""
    out = {}
    for seed in SEEDS:
        d = tmp_path_factory.mktemp(f"relational_heads_s{seed}")
        tr, va = relational_stores(d, seed, levels=("roi", "temporal", "context"))
        for store in (tr, va):
            write_tracks(str(store))  # identities for the val split's detector boxes too
        for name, (head, head_args) in CONFIGS.items():
            out[name, seed] = train_per_class_ap(tr, va, d / name, head, head_args, seed)
    return out


def mean_ap(aps, config, classes):
    return relational_helpers.mean_ap(aps, config, classes, SEEDS)


def gap(aps, a, classes):
    return mean_ap(aps, a, classes) - mean_ap(aps, "linear", classes)


def test_sonly_beats_linear_on_person_object(aps):
    # Measured mean gaps: class 4 0.259, class 5 0.470, classes 4+5 0.365.
    assert gap(aps, "sonly", [5]) > 0.23
    assert gap(aps, "sonly", [4, 5]) > 0.18


def test_acrn_beats_linear_on_person_object(aps):
    # Measured mean gap on classes 4+5: 0.302 (0.354 and 0.250 on seeds 0 and 1).
    assert gap(aps, "acrn", [4, 5]) > 0.15


def test_acar_rn_beats_linear_on_person_object(aps):
    # Measured mean gap on classes 4+5: 0.291 (0.369 and 0.212).
    assert gap(aps, "acar_rn", [4, 5]) > 0.15


def test_acar_beats_linear_on_person_object(aps):
    # Measured mean gap on classes 4+5: 0.125 (0.165 and 0.086). Smaller than acar_rn's: the two
    # differ only in HR2O, which has no higher-order rule to find here; not diagnosed further.
    assert gap(aps, "acar", [4, 5]) > 0.06


def test_tonly_beats_linear_on_get_up(aps):
    # Measured mean gap on class 7: 0.319 (0.359 and 0.278 on seeds 0 and 1).
    assert gap(aps, "tonly", [7]) > 0.15


def test_igmn_beats_linear_on_get_up(aps):
    # Measured mean gap on class 7: 0.565 (0.628 and 0.501); mean AP 0.924.
    assert gap(aps, "igmn", [7]) > 0.28
    assert mean_ap(aps, "igmn", [7]) > 0.8  # the temporal relation is learned, not just better


def test_no_head_loses_the_pose_classes(aps):
    for config in CONFIGS:
        for c in (1, 2, 3):
            assert mean_ap(aps, config, [c]) > 0.95, (config, c)
