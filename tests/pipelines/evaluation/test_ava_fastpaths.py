"""The evaluator's fast paths for keyframe-contiguous files give exactly what their general forms give.

A model's output file lists each keyframe's rows together (often the same number of rows per
keyframe); `evaluate` then sorts per keyframe, reshapes instead of scattering, and computes keys
once per run of rows. Each path is checked against the general numpy call it replaces and, end to
end, against the structural reference of each protocol (tests/pipelines/evaluation/ava_reference.py).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stagecache.extract.formats.csv_table import AvaFormatError, load_csv
from stagecache.pipelines.evaluation.ava import _run_keys, frame_map
from stagecache.pipelines.evaluation.runs import table_runs
from stagecache.pipelines.evaluation.core import class_index, first_appearance_ids, grouped_desc_order, match, member
from tests.pipelines.evaluation import ava_reference as ref

CLASSES = [1, 2, 3]


def test_grouped_desc_order_is_lexsort():
    rng = np.random.default_rng(0)
    for t in range(300):
        k, w = int(rng.integers(1, 8)), int(rng.integers(1, 30))
        if t % 3 == 0:  # same size for every group: the reshape path
            grp = np.repeat(np.arange(k), w)
        elif t % 3 == 1:  # contiguous, sizes vary (gaps in the ids too)
            grp = np.repeat(np.sort(rng.choice(50, k, replace=False)), rng.integers(1, w + 1, k))
        else:  # any order: the lexsort fallback
            grp = rng.integers(0, k, k * w)
        if t % 10 == 5:  # one huge group among small ones: padding too large, fallback
            grp = np.sort(np.concatenate([grp, np.full(500, grp.max() + 1)]))
        vals = [-np.inf, -1.5, -0.0, 0.0, 0.25, 0.25 + 2 ** -50, 3.0, np.inf]
        score = rng.choice(vals, grp.size) if t % 2 else rng.normal(0, 1, grp.size)
        np.testing.assert_array_equal(grouped_desc_order(grp, score), np.lexsort((-score, grp)))


def test_first_appearance_ids_and_member():
    rng = np.random.default_rng(2)
    for t in range(100):
        keys = np.repeat(rng.choice(1000, 6, replace=False), rng.integers(1, 5, 6)) if t % 2 else rng.integers(0, 6, 20)
        order = {}
        for v in keys.tolist():
            order.setdefault(v, len(order))
        ids, K = first_appearance_ids(keys)
        np.testing.assert_array_equal(ids, [order[v] for v in keys.tolist()])
        assert K == len(order)
        cls = np.array(sorted(rng.choice(np.arange(-3, 9), 4, replace=False)))
        v = rng.integers(-10, 20, 50)
        np.testing.assert_array_equal(member(v, cls), np.isin(v, cls))
        inside = v[np.isin(v, cls)]
        np.testing.assert_array_equal(class_index(inside, cls), np.searchsorted(cls, inside))


def test_match_near_and_far_group_keys_agree():
    rng = np.random.default_rng(7)
    for _ in range(50):
        g_group = np.sort(rng.integers(0, 6, 12))
        d_group = rng.integers(-1, 7, 40)
        g_box = rng.integers(0, 3, (12, 4)).astype(float) / 2
        d_box = rng.integers(0, 3, (40, 4)).astype(float) / 2
        dense = match(d_group, d_box, g_group, g_box, 0.5)  # small keys
        far = np.int64(1) << 40  # keys far apart
        np.testing.assert_array_equal(match(np.where(d_group < 0, -1, d_group * far), d_box, g_group * far, g_box, 0.5),
                                      dense)
        want = np.zeros(40, dtype=bool)  # per group, in order: best GT box (first on ties), free and >= 0.5
        for grp in np.unique(d_group):
            gi = np.flatnonzero(g_group == grp)
            taken = set()
            for i in np.flatnonzero(d_group == grp):
                if gi.size == 0:
                    continue
                ious = [_iou(d_box[i], g_box[j]) for j in gi]
                j = int(np.argmax(ious))  # numpy's argmax picks the first NaN: never a TP
                if not math.isnan(ious[j]) and ious[j] >= 0.5 and j not in taken:
                    want[i] = True
                    taken.add(j)
        np.testing.assert_array_equal(dense, want)


def _iou(a, b):
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter = ih * iw
    union = (a[3] - a[1]) * (a[2] - a[0]) + (b[3] - b[1]) * (b[2] - b[0]) - inter
    return inter / union if union else float("nan")


def _keys(codes, ts, source, remap):
    """Row keys as evaluate_files builds them: one key per run of equal (video, timestamp), repeated."""
    starts = table_runs([codes], [ts], np.array([0, codes.size]))
    return np.repeat(_run_keys(codes[starts[:-1]], ts[starts[:-1]], source, remap), np.diff(starts))


def test_keys_are_computed_per_row_or_per_run_alike():
    rng = np.random.default_rng(3)
    remap = np.array([4, 0, 2, 1, 3])
    for t in range(50):
        codes = rng.integers(0, 5, 40)
        ts = rng.choice([902.0, 902.0004, 903.0, 0.0, 1800.25], 40)
        if t % 2:  # contiguous keyframes, as in a model's output file
            o = np.lexsort((ts, codes))
            codes, ts = codes[o], ts[o]
        want = remap[codes].astype(np.int64) * (1 << 32) + np.rint(ts * 1000.0).astype(np.int64)
        np.testing.assert_array_equal(_keys(codes, ts, "x.csv", remap), want)
    with pytest.raises(AvaFormatError, match="x.csv"):
        _keys(np.zeros(3, np.int64), np.array([1.0, -2.0, 1.0]), "x.csv", remap)


def test_finite_check_is_exact_when_the_sum_overflows(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("v1,1e308\nv1,1e308\n")  # finite values whose sum is inf: not an error
    load_csv(p, (2,), ("video", "timestamp")).check_finite(("video", "timestamp"))
    p.write_text("v1,1e308\nv1,-1e308\nv1,nan\n")
    with pytest.raises(AvaFormatError, match=r"a\.csv:3: timestamp \(column 2\) is nan"):
        load_csv(p, (2,), ("video", "timestamp")).check_finite(("video", "timestamp"))


def _contiguous_case(rng):
    n_kf, w = int(rng.integers(1, 4)), int(rng.integers(20, 120))
    grid = int(rng.choice([2, 4]))
    gt = []
    for f in range(n_kf):
        for _ in range(int(rng.integers(0, 5))):
            x1, x2 = sorted(rng.integers(0, grid + 1, 2) / grid)
            y1, y2 = sorted(rng.integers(0, grid + 1, 2) / grid)
            gt.append((f, x1, y1, x2, y2, int(rng.integers(1, 5)), None))
    if not gt:
        gt = [(0, 0.0, 0.0, 0.5, 0.5, 1, None)]
    det = []
    for f in range(n_kf + 1):  # the last keyframe has no GT
        for _ in range(w):  # every keyframe the same number of rows, listed together
            b = rng.integers(0, grid + 1, 4) / grid
            det.append((f, *b.tolist(), int(rng.integers(1, 4)), float(rng.integers(0, 5)) / 4))
    ex = [int(rng.integers(0, n_kf))] if rng.random() < 0.2 else []
    return gt, det, ex


@pytest.mark.parametrize("protocol", ["official", "pyslowfast", "mmaction2"])
def test_contiguous_equal_sized_keyframes_match_reference(protocol):
    rng = np.random.default_rng({"official": 4, "pyslowfast": 5, "mmaction2": 6}[protocol])
    for _ in range(60):
        gt, det, ex = _contiguous_case(rng)
        if protocol == "mmaction2":  # its evaluator refuses inverted boxes
            det = [(f, min(a, c), min(b, d), max(a, c), max(b, d), k, s) for f, a, b, c, d, k, s in det]
        cap = int(rng.choice([50, 7])) if protocol == "official" else None
        g = np.array([r[:6] for r in gt], float)
        d = np.array(det, float)
        got = frame_map(g[:, 0].astype(int), g[:, 1:5], g[:, 5].astype(int), d[:, 0].astype(int), d[:, 1:5],
                        d[:, 5].astype(int), d[:, 6], class_ids=CLASSES, excluded_kf=ex, max_dets_per_kf=cap,
                        protocol=protocol)
        want_aps, want_map = (ref.mmaction2(gt, det, CLASSES, ex) if protocol == "mmaction2"
                              else ref.official_or_pyslowfast(gt, det, CLASSES, ex, cap=cap, protocol=protocol))
        a = torch.tensor([got.per_class[c] for c in CLASSES], dtype=torch.float64)
        b = torch.tensor([want_aps.get(c, math.nan) for c in CLASSES], dtype=torch.float64)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, equal_nan=True)
        torch.testing.assert_close(torch.tensor(got.map, dtype=torch.float64),
                                   torch.tensor(want_map, dtype=torch.float64), rtol=0, atol=1e-9, equal_nan=True)
