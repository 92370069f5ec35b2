"""The seam between a split and everything that feeds a head from it: a `SplitSource`.

The training loop, validation (`run_eval.run_head`), `predict`, `write-bank`, class-balanced
retraining, `visualize` and `ablate` ask a split's source for batches and nothing else. Two sources:

    resident  `ResidentSource`: the whole split in memory (on the GPU when it fits there, else on
              the host), batches gathered from it (`GraphData.training_batches`).
    streamed  `stream.StreamedSource`: only the split's small arrays in memory; the feature arrays
              read from the store a chunk of batches at a time, within a memory budget.

Both yield the same `Batch`es for the same query keyframes (`Batch.rows` index the source's
`graph`, which holds every keyframe, actor and object of the split, with its features only when
resident). Which one a split gets is decided here (`choose_sources`) from its size for the head,
estimated from the store's array shapes before anything is read, and `--memory-budget`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np
import torch
from torch import Tensor

from stagecache.core.errors import UserError
from stagecache.extract.store import format_bytes
from stagecache.extract.store.io import axis_of
from stagecache.pipelines.training.split_batches import CHUNK_BYTES, Batch, GraphData, epoch_batches

SOURCES = ("auto", "resident", "streamed")
# Arrays a streamed source reads per chunk; every other array of a split stays in memory.
STREAMED_ARRAYS = frozenset({"actor_pooled", "object_feature", "actor_roi", "actor_temporal", "kf_context",
                             "actor_maps"})
# The default --memory-budget: this share of the memory available when the run starts.
DEFAULT_SHARE = 0.6


class PreflightError(UserError, ValueError):
    """A run that cannot work with the stores / options given."""


class NonFiniteError(UserError, ValueError):
    """A loaded float array holds NaN or Inf (one line: store, group, array, first row, video)."""


class SplitSource(Protocol):
    """What a run asks a split for. `graph`: every keyframe, actor and object of the split (boxes,
    labels, tracks, structure); its feature arrays only when `kind` is "resident"."""

    kind: str
    graph: GraphData

    def batches(self, batches: list[Tensor], radius: float, dtype: torch.dtype = torch.float32, *,
                device: torch.device | None = None, actor_labels: bool = False,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[Batch]:
        """The `Batch` of each set of query keyframes (indices into `graph`), in order, on `device`."""
        ...

    def epoch_batches(self, queries: Tensor, batch_size: int, sampling: str, seed: int, epoch: int) -> list[Tensor]:
        """One training epoch's batches, a function of (seed, epoch) only."""
        ...


class ResidentSource:
    """The whole split in memory (`graph`, on the GPU when it fits there)."""

    kind = "resident"

    def __init__(self, graph: GraphData):
        self.graph = graph

    def batches(self, batches: list[Tensor], radius: float, dtype: torch.dtype = torch.float32, *,
                device: torch.device | None = None, actor_labels: bool = False,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[Batch]:
        return self.graph.training_batches(batches, radius, dtype, device=device, actor_labels=actor_labels,
                                           chunk_bytes=chunk_bytes)

    def epoch_batches(self, queries: Tensor, batch_size: int, sampling: str, seed: int, epoch: int) -> list[Tensor]:
        return epoch_batches(queries, batch_size, sampling, seed, epoch)


# ----------------------------------------------------------------------------- memory


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes of "4G", "512M", "1.5GiB", "300000" (binary units: K = 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"memory size {text!r}: give a number with an optional unit K, M, G or T (e.g. 4G, 512M)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ValueError(f"memory size {text!r} must be > 0")
    return n


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _own_cgroups() -> tuple[str, str]:
    """This process's memory cgroup paths (v1 memory controller, v2 unified), from /proc/self/cgroup."""
    v1 = v2 = ""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrl, path = line.rstrip("\n").split(":", 2)
                if "memory" in ctrl.split(","):
                    v1 = path.rstrip("/")
                elif ctrl == "":
                    v2 = path.rstrip("/")
    except (OSError, ValueError):
        pass
    return v1, v2


def available_memory() -> tuple[int, str]:
    """(bytes this process may still allocate, where that figure comes from): the least of
    MemAvailable and the headroom of the memory cgroup (v1 limit_in_bytes - usage_in_bytes, v2
    memory.max - memory.current) it runs in."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except OSError:
        pass
    v1, v2 = _own_cgroups()
    for limit, usage, name in ((f"/sys/fs/cgroup/memory{v1}/memory.limit_in_bytes",
                                f"/sys/fs/cgroup/memory{v1}/memory.usage_in_bytes", "cgroup v1"),
                               (f"/sys/fs/cgroup{v2}/memory.max", f"/sys/fs/cgroup{v2}/memory.current", "cgroup v2")):
        lim, use = _read_int(limit), _read_int(usage)
        if lim is not None and use is not None and lim < (1 << 60):
            found.append((max(lim - use, 0), f"{name} limit"))
    if not found:
        return 8 << 30, "assumed 8 GiB (no /proc/meminfo)"
    return min(found)


def default_budget() -> tuple[int, str]:
    """The --memory-budget when none is given, and why."""
    avail, where = available_memory()
    return int(avail * DEFAULT_SHARE), f"{int(DEFAULT_SHARE * 100)}% of {format_bytes(avail)} available ({where})"


# ----------------------------------------------------------------------------- sizes


def _row_bytes(shape: tuple[int, ...], dtype) -> int:
    return int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize


def split_bytes(store, select: dict[str, list[str]]) -> tuple[int, int]:
    """(bytes of the arrays a streamed source keeps in memory, bytes of those it streams) of a
    split read with `select` ({group: [array]}), from the store's array shapes: nothing is read."""
    small = big = 0
    for g, names in select.items():
        info = store.array_info(g)
        for n in names:
            shape, dt = info[n]
            b = int(shape[0]) * _row_bytes(shape, dt)
            if n in STREAMED_ARRAYS:
                big += b
            else:
                small += b
    return small, big


def keyframe_bytes(store, select: dict[str, list[str]]) -> np.ndarray:
    """(K,) bytes a streamed source allocates for each keyframe's rows of the streamed arrays: what
    it reads (every actor row of the keyframe) plus the selected actors' copy."""
    per = {"kf": 0, "actor": 0, "object": 0}
    for g, names in select.items():
        info = store.array_info(g)
        for n in names:
            if n in STREAMED_ARRAYS:
                ax = axis_of(n)
                per[ax] += _row_bytes(*info[n]) * (2 if ax == "actor" else 1)
    ac = np.diff(store._kf_act)
    oc = np.diff(store._kf_obj)
    return per["kf"] + ac * per["actor"] + oc * per["object"]


@dataclass(frozen=True)
class SplitSize:
    """A split's memory for one head, from the store's shapes: `resident` bytes (every array read),
    `small` (what a streamed source keeps), `video_bytes` (V,) what streaming each video allocates."""

    label: str
    resident: int
    small: int
    video_bytes: np.ndarray
    video_names: list[str]

    def largest_video(self) -> tuple[str, int]:
        if not len(self.video_bytes):
            return "-", 0
        i = int(np.argmax(self.video_bytes))
        return self.video_names[i], int(self.video_bytes[i])


@dataclass(frozen=True)
class SourceChoice:
    """How one split is read: `kind` ("resident" or "streamed"), the bytes a streamed source may
    hold for its chunks (`budget`) and the one line that says why."""

    kind: str
    budget: int
    why: str


def choose_sources(sizes: list[SplitSize], budget: int, budget_why: str, force: str = "auto") -> list[SourceChoice]:
    """One `SourceChoice` per split. Smallest splits first, a split is resident when it fits what is
    left of `budget` after every later split's least streamed need, else streamed; `force`
    (--split-source) picks one kind for all. The streamed splits keep their small arrays and share
    what is left equally for their chunks. A chunk holds at least one batch, whose keyframes may end
    one video and start the next under blocks sampling, and two chunks live at once (the one used,
    the one being read): a streamed split needs four times its largest video. A split that fits no
    source is a one-line `PreflightError` with the numbers (and the video that does not fit)."""
    least = [s.small + 4 * s.largest_video()[1] for s in sizes]
    order = sorted(range(len(sizes)), key=lambda i: sizes[i].resident)
    where = f"the memory budget {format_bytes(budget)} ({budget_why})"
    left, resident = budget, set()
    for pos, i in enumerate(order):
        s = sizes[i]
        room = left - sum(least[j] for j in order[pos + 1:])
        if force == "resident" or (force == "auto" and s.resident <= room):
            if s.resident > room:
                raise PreflightError(f"{s.label}: resident needs {format_bytes(s.resident)}, {where} leaves it "
                                     f"{format_bytes(max(room, 0))}; use --split-source streamed or a larger --memory-budget")
            resident.add(i)
            left -= s.resident
    streamed = [i for i in range(len(sizes)) if i not in resident]
    share = (left - sum(sizes[i].small for i in streamed)) // max(len(streamed), 1)
    out = []
    for i, s in enumerate(sizes):
        if i in resident:
            how = "forced" if force == "resident" else "fits"
            out.append(SourceChoice("resident", 0, f"{s.label}: resident ({format_bytes(s.resident)} {how} in {where})"))
            continue
        video, vbytes = s.largest_video()
        if share < 4 * vbytes:
            raise PreflightError(f"{s.label}: streaming needs at least {format_bytes(least[i])} (small arrays "
                                 f"{format_bytes(s.small)} + two chunks of twice its largest video {video}, "
                                 f"{format_bytes(vbytes)}), {where} leaves it {format_bytes(max(s.small + share, 0))}; "
                                 "give a larger --memory-budget")
        reason = "forced" if force == "streamed" else f"resident would need {format_bytes(s.resident)}"
        out.append(SourceChoice("streamed", share, f"{s.label}: streamed ({reason}; {where}: {format_bytes(s.small)} "
                                f"in memory + two chunks of up to {format_bytes(share // 2)})"))
    return out


def budget_from(text: str) -> tuple[int, str]:
    """--memory-budget as (bytes, why): the option's value, or `default_budget()` when empty."""
    if text:
        return parse_size(text), "--memory-budget"
    return default_budget()


def stream_kill_hook() -> int:
    """STAGECACHE_KILL_AFTER_CHUNKS=N: a streamed source SIGKILLs its process after the N-th chunk it
    reads (tests of a kill mid-epoch); 0 when unset."""
    return int(os.environ.get("STAGECACHE_KILL_AFTER_CHUNKS", "0") or 0)
