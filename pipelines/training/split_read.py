"""Reading a split for a head, once a run's checks have passed (split.py): what it reads of the
store (`read_select`), the finite check of what was read, and the two ways it is held — resident
(`load_resident`: `FeatureStore.load` of every array, the run's tensors built from it, the host
copy of the features dropped once they live on the GPU: no split is held twice) or streamed
(`load_streamed`: only the small arrays loaded, the features read per chunk by
`stream.StreamedSource`); `load_splits` chooses between them (`sources.choose_sources`) and says
in one line per split which and why.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from stagecache.core.boxes import select_actors
from stagecache.extract.store.io import axis_of
from stagecache.extract.store.ranges import RangeReader
from stagecache.extract.store.schema import LEVELS
from stagecache.pipelines.training.sources import (STREAMED_ARRAYS, NonFiniteError, PreflightError, ResidentSource,
                                                   SplitSize, SplitSource, budget_from, choose_sources,
                                                   keyframe_bytes, split_bytes)
from stagecache.pipelines.training.split_batches import BANK_MAPS, GraphData, build_graph_data
from stagecache.pipelines.training.stream import StreamedSource


@dataclass(frozen=True)
class SplitSpec:
    """How a run reads one store: which actors (`boxes`, `score_threshold`); `role` ("train",
    "val", "predict") leads every message about the store."""

    path: str
    role: str
    boxes: str
    score_threshold: float


@dataclass
class Split:
    """One loaded split: the store, its tables (`FeatureStore.load` of its small arrays: structure,
    boxes, labels), its `graph` (every keyframe, actor and object; the features too when resident)
    and the `source` every batch is asked from (sources.SplitSource)."""

    spec: SplitSpec
    store: object  # extract.store.FeatureStore
    tables: object  # extract.store.Tables
    graph: GraphData
    source: SplitSource


def nonfinite_rows(t: torch.Tensor) -> tuple[int, int]:
    """(number of rows of `t` holding a NaN/Inf, the first such row; -1 if none). A whole-array
    min and max first (NaN and +-Inf reach them): one pass and no mask in the usual all-finite
    case, ~10x faster than `isfinite` on float16 (torch 2.14, CPU); rows are located only then."""
    if t.numel() == 0 or not t.is_floating_point():
        return 0, -1
    lo, hi = torch.aminmax(t)
    if bool(torch.isfinite(lo) & torch.isfinite(hi)):
        return 0, -1
    rows = torch.nonzero(~torch.isfinite(t.reshape(len(t), -1)).all(dim=1)).flatten()
    return len(rows), int(rows[0])


def check_finite(tables, path: str, role: str = "") -> None:
    """Every float array of `tables` (a store's load) is finite, else `NonFiniteError` naming the
    store (`role`, e.g. "train", leads the message), group, array, rows, first video and timestamp."""
    for key, t in tables.data.items():
        count, row = nonfinite_rows(t)
        if not count:
            continue
        g, n = key.split("/", 1)
        axis = axis_of(n)
        k = row if axis == "kf" else int({"actor": tables.actor_kf, "object": tables.object_kf}[axis][row])
        video = tables.video_names[int(tables.kf_video[k])]
        raise NonFiniteError(
            f"{role + ' ' if role else ''}store {path}: group {g}, array {n}: {count} row(s) with NaN/Inf (first: row "
            f"{row}, video {video}, timestamp {float(tables.kf_time[k]):g}); re-extract those videos")


# Base arrays kept in `Split.tables` after loading (validation's ground truth, `gt_for_eval`).
KEEP_IN_TABLES = ("base/actor_is_gt", "base/actor_labels", "base/actor_box", "base/actor_score")


@dataclass(frozen=True)
class ReadPlan:
    """What a split is read with: backbone `groups`, `levels` (store arrays), a `bank_group`,
    object features or not, the one-hot width of feature-less objects."""

    groups: list[str]
    levels: list[str]
    combine: str = "mean"
    bank_group: str = ""
    num_object_classes: int = 0
    objects: bool = True


def read_select(store, plan: ReadPlan) -> dict[str, list[str]]:
    """{group: [array]} of everything a split read with `plan` loads when resident."""
    base = store.array_info("base")
    select = {"base": sorted(n for n in base if plan.objects or n != "object_feature")}
    for g in plan.groups:
        select[g] = ["actor_pooled"] + [lv for lv in plan.levels if lv in store.array_info(g)]
    if "tracks" in store.groups:
        select["tracks"] = ["actor_track"]
    if plan.bank_group:
        if plan.bank_group not in store.groups or "actor_maps" not in store.array_info(plan.bank_group):
            raise PreflightError(f"store {store.path} has no {plan.bank_group}/actor_maps; write the bank first "
                                 f"(write-bank --run <bank-free run> --store {store.path} --group {plan.bank_group})")
        select[plan.bank_group] = ["actor_maps"] + (
            ["actor_in_bank"] if "actor_in_bank" in store.array_info(plan.bank_group) else [])
    return select


def stream_select(store, plan: ReadPlan) -> dict[str, list[str]]:
    """The arrays of `read_select` a streamed source reads per chunk (levels: of the first backbone)."""
    full = read_select(store, plan)
    out = {g: [n for n in names if n in STREAMED_ARRAYS] for g, names in full.items()}
    for g in plan.groups[1:]:
        out[g] = ["actor_pooled"]
    return {g: names for g, names in out.items() if names}


def _selected(tables, spec) -> np.ndarray:
    return select_actors(tables.data["base/actor_is_gt"].bool().numpy(), tables.data["base/actor_score"].float().numpy(),
                         boxes=spec.boxes, score_threshold=spec.score_threshold)


def _track(store) -> str:
    return "tracks/actor_track" if "tracks" in store.groups else "base/actor_track"


def load_resident(store, spec: SplitSpec, plan: ReadPlan, device: torch.device) -> Split:
    """Every array of `read_select` loaded, checked finite, the actors of `spec` selected; the graph
    on `device` when it takes under 60% of its free memory (else on the host)."""
    tables = store.load(read_select(store, plan))
    check_finite(tables, store.path, spec.role)  # on what was read: one read of the store, before any write
    sel = _selected(tables, spec)
    g = build_graph_data(
        tables, backbones=list(plan.groups), combine=plan.combine, select=sel, levels=frozenset(plan.levels),
        track_array=_track(store), num_object_classes=plan.num_object_classes if plan.objects else 0,
        device=device if _fits(tables, device) else torch.device("cpu"),
    )
    if plan.bank_group:
        _check_bank(tables, plan.bank_group, sel, store.path)
        g.actor_extras[BANK_MAPS] = tables.data[f"{plan.bank_group}/actor_maps"][torch.from_numpy(sel)].to(g.device)
    # The features live in the graph now (on the GPU, or shared with these tensors on the host): the
    # tables keep only what validation reads, so no split is held twice.
    tables.data = {k: v for k, v in tables.data.items() if k in KEEP_IN_TABLES}
    return Split(spec, store, tables, g, ResidentSource(g))


def load_streamed(store, spec: SplitSpec, plan: ReadPlan, device: torch.device, budget: int) -> Split:
    """The small arrays of the split loaded (structure, boxes, labels, scores, tracks, objects'
    boxes and classes) and checked; the features left to a `StreamedSource` holding at most
    `budget` bytes of chunks. The graph is on the host, with 0-wide feature columns."""
    streamed = stream_select(store, plan)
    small = {g: [n for n in names if n not in STREAMED_ARRAYS] for g, names in read_select(store, plan).items()}
    tables = store.load({g: names for g, names in small.items() if names})
    check_finite(tables, store.path, spec.role)
    sel = _selected(tables, spec)
    for b in plan.groups:  # 0-wide stand-ins: build_graph_data's structure without the features
        tables.data[f"{b}/actor_pooled"] = torch.empty((store.num_actors, 0), dtype=torch.float16)
    g = build_graph_data(tables, backbones=list(plan.groups), combine=plan.combine, select=sel, object_feature=None,
                         track_array=_track(store), device="cpu")
    if plan.bank_group:
        _check_bank(tables, plan.bank_group, sel, store.path)
    tables.data = {k: v for k, v in tables.data.items() if k in KEEP_IN_TABLES}
    obj = store.array_info("base").get("object_feature")
    objects = ("feature" if plan.objects and obj is not None and obj[0][-1] > 0 else
               "onehot" if plan.objects and plan.num_object_classes > 0 else "none")
    levels = {lv.field: (plan.groups[0], lv.array) for lv in LEVELS.values() if lv.array in plan.levels}
    if device.type == "cuda":  # the chunks also live on the GPU: at most 30% of its free memory for them
        budget = min(budget, int(0.3 * torch.cuda.mem_get_info(device)[0]))
    source = StreamedSource(g, RangeReader(store, streamed), feats=list(plan.groups), combine=plan.combine,
                            levels=levels, objects=objects, num_object_classes=plan.num_object_classes,
                            bank=(plan.bank_group, "actor_maps") if plan.bank_group else None, budget=budget,
                            keyframe_bytes=keyframe_bytes(store, streamed), device=device, role=spec.role)
    return Split(spec, store, tables, g, source)


def split_size(store, spec: SplitSpec, plan: ReadPlan) -> SplitSize:
    """A split's memory for this head, from its array shapes (nothing is read)."""
    small, big = split_bytes(store, read_select(store, plan))
    streamed = stream_select(store, plan)
    small_streaming = small + big - split_bytes(store, streamed)[1]
    kfb = keyframe_bytes(store, streamed)
    per_video = np.bincount(store._kf_video, weights=kfb, minlength=len(store.videos)).astype(np.int64)
    return SplitSize(f"{spec.role} split {store.path}", small + big, small_streaming, per_video, list(store.videos))


def load_splits(items: Sequence[tuple[object, SplitSpec, ReadPlan]], device: torch.device, *,
                memory_budget: str = "", split_source: str = "auto", say=None) -> list[Split]:
    """The splits of (opened store, spec, plan) items, each resident or streamed as
    `sources.choose_sources` decides from their sizes before anything is read; one line per split
    (`say(line)`, default: printed to stderr) says which and why."""
    budget, why = budget_from(memory_budget)
    choices = choose_sources([split_size(st, spec, plan) for st, spec, plan in items], budget, why, split_source)
    out = []
    for (store, spec, plan), choice in zip(items, choices):
        # A command without a run's console (predict, write-bank, visualize) prefixes the line as a run does.
        (say or (lambda line: print(f"[split source] {line}", file=sys.stderr)))(choice.why)
        if choice.kind == "resident":
            out.append(load_resident(store, spec, plan, device))
        else:
            out.append(load_streamed(store, spec, plan, device, choice.budget))
    return out


def _check_bank(tables, group: str, sel: np.ndarray, path: str) -> None:
    """Every selected actor has an entry in the bank (`actor_in_bank`, when the store has it)."""
    sel_t = torch.from_numpy(np.asarray(sel, dtype=bool))
    written = tables.data.get(f"{group}/actor_in_bank")
    if written is not None:
        missing = sel_t & ~written.bool()
        if missing.any():
            raise PreflightError(f"store {path}: {int(missing.sum())} of the selected actors have no entry in "
                                 f"{group}/actor_maps (it was written for other boxes or a lower score threshold); "
                                 "rewrite the bank with write-bank --boxes gt+proposals and a threshold at most this run's")


def _fits(tables, device: torch.device) -> bool:
    """Keep the whole split on the GPU when it takes under 60% of the free memory."""
    if device.type != "cuda":
        return True
    need = sum(t.numel() * t.element_size() for t in tables.data.values())
    free, _ = torch.cuda.mem_get_info(device)
    return need < 0.6 * free

