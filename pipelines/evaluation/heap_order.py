"""The official per-keyframe heap over a file's rows, chunk by chunk (`kernels.heap_chunk` does the work).

ActivityNet's `read_csv` (2019) keeps at most 50 detections per keyframe in a `heapq` list and hands
them on in `sorted(heap, key=-score)` order; ground truth goes through the same code without a cap
(its 8th column, the person id, as the score). `official_heap` replays that code exactly on rows
given as chunks (the CSV reader's, or one chunk of in-memory arrays), so a 15M-row predictions file
is never copied whole: only the kept rows come out.
"""
from __future__ import annotations

import itertools
from typing import Iterable, NamedTuple

import numpy as np


class Kept(NamedTuple):
    """Rows a heap kept, keyframe by keyframe in order of first appearance, in the official order."""

    run: np.ndarray  # (m,) keyframe index
    score: np.ndarray  # (m,) float64
    cls: np.ndarray  # (m,) class slot (index into the sorted class ids)
    box: np.ndarray  # (m, 4) x1, y1, x2, y2 (float64)


class HeapChunk(NamedTuple):
    """Consecutive file rows `offset`.. of the columns the heap reads."""

    offset: int
    cls: np.ndarray  # (n,) label ids (int, or integral floats)
    score: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray


def slot_table(class_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """(table, lo): `table[id - lo + 1]` is the index of `id` in the sorted `class_ids`, C (their
    count) for ids between them that are not label ids; slot 0 and ids past the end stand for C too.
    Slots keep the ids' order, so heap tuples compare on slots as on the ids."""
    C = class_ids.size
    if C == 0:
        return np.zeros(1, np.int64), 0
    lo, hi = int(class_ids[0]), int(class_ids[-1])
    if hi - lo > 1 << 24:
        raise ValueError(f"label ids span {hi - lo + 1} values: too sparse a label map")
    table = np.full(hi - lo + 2, C, np.int64)
    table[class_ids - lo + 1] = np.arange(C)
    return table, lo


def official_heap(chunks: Iterable[HeapChunk], starts: np.ndarray, class_ids: np.ndarray,
                  keep_run: np.ndarray | None, cap: int) -> Kept:
    """Kept rows of every keyframe; `starts` (R + 1,): first row of each keyframe (rows contiguous).
    `cap` < 1: no cap (ground truth); `keep_run`: (R,) bool, keyframes not excluded (None: all)."""
    from stagecache.pipelines.evaluation.kernels import heap_chunk  # numba compiles on first use (then cached)

    R = starts.size - 1
    hcap = cap if cap >= 1 else int(np.diff(starts).max(initial=0))  # most rows one heap can hold
    lut, lo = slot_table(class_ids)
    keep_run = np.ones(R, dtype=np.bool_) if keep_run is None else np.ascontiguousarray(keep_run, np.bool_)
    starts = np.ascontiguousarray(starts, np.int64)
    h = np.zeros((max(hcap, 1) + 2, 6))  # two scratch rows after the heap
    state = np.array([-1, 0, 0], np.int64)
    most = min(int(starts[-1]), R * hcap) if cap >= 1 else int(starts[-1])  # rows the heaps can keep
    out_run, out_val = np.empty(most, np.int64), np.empty((most, 6))
    empty = np.zeros(0)
    last = HeapChunk(int(starts[-1]), np.zeros(0, np.int64), empty, empty, empty, empty, empty)  # flushes the last heap
    for c in itertools.chain(chunks, [last]):  # lazily: a file's chunks are made one at a time
        heap_chunk(np.int64(c.offset), starts, c.cls, c.score, c.x1, c.y1, c.x2, c.y2, lut, np.int64(lo), keep_run,
                   int(cap), h, state, out_run, out_val, c is last)
    run, val = out_run[:state[2]], out_val[:state[2]]
    # entries are (score, class slot, y1, x1, y2, x2)
    return Kept(run, val[:, 0].copy(), val[:, 1].astype(np.int64), val[:, [3, 2, 5, 4]])
