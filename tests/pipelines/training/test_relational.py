"""STAGE on the synthetic relational feature store: relations are learned, and each switch matters.

The feature-level synthetic store (`extract/synthetic/store.py`) puts only pose and identity in an
actor's feature, so classes 4 "hold cup" / 5 "ride bike" (nearest object within 0.15) need object
boxes + box proximity and class 7 "get up" needs the previous keyframe (temporal links); classes 1-3
(pose) are linear in the feature. This test trains `linear`, `stage`, `stage proximity=False` and
`stage temporal=False` once per seed and asserts seed-averaged per-class AP margins, each about half
of the measured mean gap.

Setting (the cheapest found that still separates the configurations): train store 16 videos x 30
keyframes (store seed = run seed), val store 5 x 30 (first_video=100), actor_dim 64, object_dim 32,
8 epochs, batch_size 8, lr 3e-3, STAGE num_layers=1 (num_heads 2), val_score_threshold 0.5,
early_stop 100, device cpu. Each run takes ~1-2 s on an idle core (~10 s on the loaded 2-core box).

Measured per-class AP (classes 1-3 are 1.000 for every configuration and seed):
  seed config    4     5     6     7
  0    linear  0.239 0.132 0.199 0.337
  0    stage   0.947 0.858 0.192 0.443
  0    noprox  0.504 0.183 0.211 0.378
  0    notemp  0.941 0.808 0.197 0.401
  1    linear  0.515 0.207 0.269 0.382
  1    stage   0.988 0.891 0.412 0.545
  1    noprox  0.647 0.310 0.359 0.346
  1    notemp  0.978 0.865 0.385 0.323
  (not run by the test, same setting:)
  2    linear  0.369 0.136 0.141 0.268
  2    stage   0.970 0.743 0.192 0.589
  2    noprox  0.534 0.236 0.198 0.354
  2    notemp  0.941 0.793 0.131 0.316
  3    linear  0.114 0.331 0.104 0.396
  3    stage   0.881 0.741 0.099 0.677
  3    noprox  0.123 0.449 0.087 0.447
  3    notemp  0.911 0.764 0.097 0.303
Mean gaps over seeds 0, 1 (seeds 0-3 in brackets): stage - linear: class 4 0.590 (0.637), class 5
0.705 (0.606), class 7 0.134 (0.217); stage - noprox: class 4 0.392 (0.494), class 5 0.628 (0.514);
stage - notemp: class 7 0.132 (0.228). Class 6 (person-person) is barely learned (stage - linear
0.068, 0.045 over 4 seeds; seed 0 is negative), so it is not asserted.
Fewer steps do not work: 12 videos x 30 keyframes, 6 epochs, dims 32/16 left class 5 at 0.13-0.23 for
STAGE (no proximity gap) -- STAGE needs enough optimisation steps to learn the relation.
"""
from __future__ import annotations

import pytest
import torch

from tests.pipelines.training import relational_helpers
from tests.pipelines.training.relational_helpers import relational_stores, train_per_class_ap

torch.set_num_threads(1)

SEEDS = (0, 1)
CONFIGS = {
    "linear": ("linear", {}),
    "stage": ("stage", {"num_layers": 1}),
    "noprox": ("stage", {"num_layers": 1, "proximity": False}),
    "notemp": ("stage", {"num_layers": 1, "temporal": False}),
}


# Trains four heads on the relational synthetic world (~20 s): CI runs it, the quick loop does not.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def aps(tmp_path_factory):
    """{(config, seed): {class id: AP}} for every configuration and seed, each trained once."""
    out = {}
    for seed in SEEDS:
        d = tmp_path_factory.mktemp(f"relational_s{seed}")
        tr, va = relational_stores(d, seed)
        for name, (head, head_args) in CONFIGS.items():
            out[name, seed] = train_per_class_ap(tr, va, d / name, head, head_args, seed)
    return out


def mean_ap(aps, config, classes):
    return relational_helpers.mean_ap(aps, config, classes, SEEDS)


def gap(aps, a, b, classes):
    return mean_ap(aps, a, classes) - mean_ap(aps, b, classes)


def test_every_class_evaluated(aps):
    for (config, seed), ap in aps.items():
        assert set(ap) == {1, 2, 3, 4, 5, 6, 7}, (config, seed, sorted(ap))


def test_stage_beats_linear_on_relation_classes(aps):
    # Measured mean gaps: class 4 0.590, class 5 0.705, class 7 0.134, classes 4+5+7 0.476.
    assert gap(aps, "stage", "linear", [4]) > 0.3
    assert gap(aps, "stage", "linear", [5]) > 0.35
    assert gap(aps, "stage", "linear", [7]) > 0.06
    assert gap(aps, "stage", "linear", [4, 5, 7]) > 0.24
    # The person-object relation is actually learned, not just better than chance.
    assert mean_ap(aps, "stage", [4, 5]) > 0.8  # measured 0.921


def test_proximity_matters_for_person_object(aps):
    # Measured mean gaps: class 4 0.392, class 5 0.628, classes 4+5 0.510.
    assert gap(aps, "stage", "noprox", [4]) > 0.2
    assert gap(aps, "stage", "noprox", [5]) > 0.3
    assert gap(aps, "stage", "noprox", [4, 5]) > 0.25


def test_temporal_links_matter_for_get_up(aps):
    # Measured mean gap on class 7: 0.132 (0.042 and 0.222 on seeds 0 and 1; 0.228 over seeds 0-3).
    assert gap(aps, "stage", "notemp", [7]) > 0.06


def test_stage_no_worse_than_linear_on_pose(aps):
    for c in (1, 2, 3):
        assert mean_ap(aps, "stage", [c]) >= mean_ap(aps, "linear", [c]) - 0.005, c
        assert mean_ap(aps, "stage", [c]) > 0.95, c
