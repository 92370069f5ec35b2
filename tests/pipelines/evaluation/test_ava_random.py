"""Randomized comparison of each protocol with its structural reference (tests/pipelines/evaluation/ava_reference.py).

Small cases on coarse grids so that everything the protocols are sensitive to happens often: score
ties inside and across keyframes, caps with ties at the boundary, equal IoUs, identical and empty
boxes, keyframes without GT, excluded keyframes, classes outside the label map, 8-column GT.
Per-class AP and mAP must be equal (to 1e-9; in practice bit-equal).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stagecache.pipelines.evaluation.ava import frame_map
from stagecache.pipelines.evaluation.protocols import ProtocolInputError
from tests.pipelines.evaluation import ava_reference as ref

CLASSES = [1, 2, 3]


def random_case(rng, invert_p: float):
    n_kf = int(rng.integers(1, 5))
    grid = int(rng.choice([2, 4, 10]))

    def box(invert):
        b = rng.integers(0, grid + 1, 4) / grid
        if not invert:
            (x1, x2), (y1, y2) = sorted(b[[0, 2]]), sorted(b[[1, 3]])
            b = np.array([x1, y1, x2, y2])
        return b.tolist()

    gt = [(int(rng.integers(0, n_kf)), *box(False), int(rng.integers(1, 5)), None)
          for _ in range(int(rng.integers(1, 10)))]
    if rng.random() < 0.3:  # 8-column GT: the readers sort by person id
        gt = [(*r[:6], int(rng.integers(0, 3))) for r in gt]
    det = []
    for _ in range(int(rng.integers(0, 70))):
        b = list(gt[int(rng.integers(0, len(gt)))][1:5]) if rng.random() < 0.3 else box(rng.random() < invert_p)
        det.append((int(rng.integers(0, n_kf + 1)), *b, int(rng.integers(1, 5)), float(rng.integers(0, 5)) / 4))
    ex = [int(rng.integers(0, n_kf))] if rng.random() < 0.25 else []
    return gt, det, ex


def ours(gt, det, ex, protocol, cap):
    g = np.array([r[:6] for r in gt], float).reshape(-1, 6)
    d = np.array(det, float).reshape(-1, 7)
    gs = None if gt[0][6] is None else [r[6] for r in gt]
    return frame_map(g[:, 0].astype(int), g[:, 1:5], g[:, 5].astype(int), d[:, 0].astype(int), d[:, 1:5],
                     d[:, 5].astype(int), d[:, 6], class_ids=CLASSES, excluded_kf=ex, max_dets_per_kf=cap,
                     protocol=protocol, gt_score=gs)


def assert_same(got, want_aps, want_map):
    a = torch.tensor([got.per_class[c] for c in CLASSES], dtype=torch.float64)
    b = torch.tensor([want_aps.get(c, math.nan) for c in CLASSES], dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9, equal_nan=True)
    torch.testing.assert_close(torch.tensor(got.map, dtype=torch.float64), torch.tensor(want_map, dtype=torch.float64), rtol=0,
                               atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("protocol,seed", [("official", 0), ("pyslowfast", 1), ("mmaction2", 2)])
def test_protocol_matches_its_reference(protocol, seed):
    rng = np.random.default_rng(seed)
    for _ in range(1200):
        gt, det, ex = random_case(rng, invert_p=0.0 if protocol == "mmaction2" else 0.15)
        cap = [50, 7, 3, 1, None][int(rng.integers(0, 5))] if protocol == "official" else None
        got = ours(gt, det, ex, protocol, cap)
        if protocol == "mmaction2":
            want = ref.mmaction2(gt, det, CLASSES, ex)
        else:
            want = ref.official_or_pyslowfast(gt, det, CLASSES, ex, cap=cap, protocol=protocol)
        assert_same(got, *want)


def test_official_large_keyframes_with_cap_ties():
    # keyframes of 60..200 rows with 5 distinct scores: the real cap of 50, decided inside a tie, and the
    # heap order replayed for equal (class, score) rows
    rng = np.random.default_rng(7)
    for _ in range(60):
        gt, det, ex = random_case(rng, invert_p=0.15)
        more = [(int(rng.integers(0, 2)), *r[1:6], float(rng.integers(0, 5)) / 4)
                for r in (det[int(i)] for i in rng.integers(0, max(len(det), 1), int(rng.integers(60, 200))))] if det else []
        det = [x for x in det + more]
        det = [det[i] for i in rng.permutation(len(det))]
        assert_same(ours(gt, det, ex, "official", 50), *ref.official_or_pyslowfast(gt, det, CLASSES, ex, cap=50))
        # keyframes contiguous, as in a model's output file: the exact partition path of the cap
        det = sorted(det, key=lambda r: r[0])
        assert_same(ours(gt, det, ex, "official", 50), *ref.official_or_pyslowfast(gt, det, CLASSES, ex, cap=50))


def test_mmaction2_refuses_inverted_detection_boxes():
    gt = [(0, 0.0, 0.0, 0.5, 0.5, 1, None)]
    det = [(0, 0.5, 0.0, 0.25, 0.5, 1, 0.9)]  # x2 < x1: MMAction2's BoxList raises
    with pytest.raises(ProtocolInputError, match="mmaction2"):
        ours(gt, det, [], "mmaction2", None)
    # official / PySlowFast drop it (after the cap): class 1 then has GT and no detection -> AP 0
    assert ours(gt, det, [], "official", 50).per_class[1] == 0.0
