"""The compiled official heap and matcher against Python's own `heapq` and numpy's `argmax` loop."""
from __future__ import annotations

import heapq

import numpy as np
import pytest

from stagecache.pipelines.evaluation.core import match
from stagecache.pipelines.evaluation.heap_order import HeapChunk, official_heap
from tests.pipelines.evaluation import ava_reference as ref


def _python_heap(run, cls, score, box, class_ids, cap):
    """ActivityNet's read_csv loop with `heapq`, then `sorted(heap, key=-score)` per keyframe."""
    heaps: dict = {}
    for i in range(run.size):
        if cls[i] not in class_ids:
            continue
        item = (float(score[i]), int(cls[i]), box[i, 1], box[i, 0], box[i, 3], box[i, 2])
        h = heaps.setdefault(int(run[i]), [])
        if cap < 1 or len(h) < cap:
            heapq.heappush(h, item)
        elif item[0] > h[0][0]:
            heapq.heapreplace(h, item)
    return [(r,) + t for r in sorted(heaps) for t in sorted(heaps[r], key=lambda t: -t[0])]


@pytest.mark.parametrize("seed", range(4))
def test_heap_equals_heapq_in_any_chunking(seed):
    rng = np.random.default_rng(seed)
    class_ids = np.array([2, 3, 5, 9])
    for t in range(80):
        K = int(rng.integers(1, 6))
        sizes = rng.integers(0 if t % 3 else 1, 40, K)
        cap = int(rng.choice([0, 1, 3, 5, 10, 50]))
        n = int(sizes.sum())
        run = np.repeat(np.arange(K), sizes)
        cls = rng.choice([1, 2, 3, 5, 9, 4], n)  # 1 and 4: not label ids, never reach a heap
        # few distinct scores: ties decided by the tuple's later fields and by the heap's internal order
        score = rng.choice([0.1, 0.2, -0.0, 0.0, 0.7], n) if t % 2 else rng.random(n)
        box = np.round(rng.random((n, 4)), 1)
        if t % 4 == 0:
            box[:] = box[:1]  # equal boxes: equal tuples
        want = _python_heap(run, cls, score, box, set(class_ids.tolist()), cap)
        cuts = [0, *np.sort(rng.integers(0, n + 1, 3)).tolist(), n]  # chunks that split keyframes
        chunks = [HeapChunk(a, cls[a:b], score[a:b], *(np.ascontiguousarray(box[a:b, j]) for j in range(4)))
                  for a, b in zip(cuts[:-1], cuts[1:])]
        k = official_heap(iter(chunks), np.concatenate([[0], np.cumsum(sizes)]), class_ids, None, cap)
        got = [(int(r), float(s), int(class_ids[c]), b[1], b[0], b[3], b[2])
               for r, s, c, b in zip(k.run, k.score, k.cls, k.box)]
        assert got == want


def test_heap_drops_excluded_keyframes():
    run_starts = np.array([0, 3, 6])
    cls, score = np.ones(6, np.int64), np.arange(6.0)
    box = np.tile([0.0, 0.0, 1.0, 1.0], (6, 1))
    k = official_heap([HeapChunk(0, cls, score, *(box[:, j].copy() for j in range(4)))], run_starts, np.array([1]),
                      np.array([True, False]), 2)
    assert k.run.tolist() == [0, 0] and k.score.tolist() == [2.0, 1.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_match_equals_the_argmax_loop_in_both_dtypes(dtype):
    # float32 boxes (MMAction2's arrays): numpy computes intersections and unions in float64 there
    rng = np.random.default_rng(11)
    for _ in range(200):
        ng, nd = int(rng.integers(0, 6)), int(rng.integers(1, 8))
        g_box = np.sort(rng.random((ng, 2, 2)), axis=1).transpose(0, 2, 1).reshape(ng, 4)[:, [0, 2, 1, 3]]
        g_box = g_box.astype(dtype)
        d_box = (g_box[rng.integers(0, max(ng, 1), nd)] if ng else np.full((nd, 4), 0.5, dtype))
        d_box = (d_box + rng.normal(0, 0.05, d_box.shape)).astype(dtype)
        if rng.random() < 0.3:
            d_box[0] = [0.2, 0.2, 0.2, 0.2]  # empty box: IoU 0 or NaN against empty GT
        tp = match(np.zeros(nd, np.int64), d_box, np.zeros(ng, np.int64), g_box, 0.5)
        yx = [1, 0, 3, 2]
        want = ref._tp_fp(d_box[:, yx], g_box[:, yx], 0.5) if ng else np.zeros(nd, dtype=bool)
        np.testing.assert_array_equal(tp, want)
