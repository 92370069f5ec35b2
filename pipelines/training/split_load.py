"""A store opened the way a run reads it: its feature groups, the arrays of the levels its head
needs, its actor selection and, for a bank head, the stored relation maps. Returns the split's
tensors (`split_batches.GraphData`); the dims a head is built with are read from the store's
metadata, before anything is loaded."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from stagecache.core.boxes import select_actors
from stagecache.core.errors import UserError
from stagecache.extract.store import LEVELS, open_store
from stagecache.extract.store.io import axis_of
from stagecache.pipelines.training.split_batches import BANK_MAPS, GraphData, build_graph_data


def backbone_groups(store, wanted: Sequence[str]) -> list[str]:
    """The feature groups to use: the requested ones, or the store's only one."""
    have = [g for g, attrs in store.groups.items() if g != "base" and "actor_pooled" in store.array_info(g)]
    if wanted:
        missing = [b for b in wanted if b not in have]
        if missing:
            raise ValueError(f"store {store.path} has no features for {missing}; it has: {have}")
        return list(wanted)
    if len(have) != 1:
        raise ValueError(f"store {store.path} holds features of {have or 'no backbone'}; choose with --backbone")
    return have


def object_class_count(*paths: str) -> int:
    """Width of the one-hot object feature used when a store holds object boxes without detector
    features: the longest class list of the stores (train and val must agree on it)."""
    return max(len(open_store(p).attrs.get("object_classes") or []) for p in paths)


def store_label_ids(store) -> list[int]:
    return [int(i) for i in store.attrs["label_ids"]]


def head_levels(head) -> list[str]:
    """The store arrays of the optional levels a head declares it reads (`head.requires`)."""
    return [LEVELS[r].array for r in sorted(head.requires) if r in LEVELS]


def reads_objects(head) -> bool:
    """Whether a head reads object features (declares "objects" in `head.requires`): `load_split`
    leaves them unread otherwise (on AVA-sized stores the largest array by far)."""
    return "objects" in head.requires


def feature_dims(store, groups: Sequence[str], combine: str, num_object_classes: int = 0) -> tuple[int, int]:
    """(actor_dim, object_dim) of the tensors `load_split` builds from `groups`, read from the
    store's array shapes (the rules of `split_batches.build_graph_data`)."""
    dims = [store.array_info(g)["actor_pooled"][0][1] for g in groups]
    actor_dim = sum(dims) if combine == "concat" else dims[0]
    obj = store.array_info("base").get("object_feature")
    if obj is not None and obj[0][-1] > 0:
        return actor_dim, int(obj[0][-1])
    return actor_dim, max(int(num_object_classes), 0)


class NonFiniteError(UserError, ValueError):
    """A loaded float array holds NaN or Inf (one line: store, group, array, first row, video)."""


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


def load_split(path: str, *, boxes: str, score_threshold: float, levels: Sequence[str], device: torch.device,
               backbones: Sequence[str] = (), combine: str = "mean", bank_group: str = "",
               num_object_classes: int = 0, objects: bool = True, role: str = "") -> tuple:
    """Open a store, load what the head needs (its `levels`, the `bank_group` of a bank head, the
    object features only with `objects`, see `reads_objects`), check that its float arrays are
    finite (`check_finite`; `role` names the store in the error), and filter actors (`boxes`,
    `score_threshold`). Returns (store, tables, GraphData); without `objects` the objects keep their
    boxes and classes, with 0-d features."""
    store = open_store(path)
    groups = backbone_groups(store, backbones)
    # None: every array of the group
    select = {"base": None if objects else [n for n in store.array_info("base") if n != "object_feature"]}
    for g in groups:
        select[g] = ["actor_pooled"] + [lv for lv in levels if lv in store.array_info(g)]
    if "tracks" in store.groups:
        select["tracks"] = ["actor_track"]
    if bank_group:
        if bank_group not in store.groups or "actor_maps" not in store.array_info(bank_group):
            raise ValueError(f"store {path} has no {bank_group}/actor_maps; write the bank first "
                             f"(write-bank --run <bank-free run> --store {path} --group {bank_group})")
        select[bank_group] = ["actor_maps"] + (
            ["actor_in_bank"] if "actor_in_bank" in store.array_info(bank_group) else [])
    tables = store.load(select)
    check_finite(tables, store.path, role)  # on what was read: one read of the store, before any write
    sel = select_actors(
        tables.data["base/actor_is_gt"].bool().numpy(),
        tables.data["base/actor_score"].float().numpy(),
        boxes=boxes,
        score_threshold=score_threshold,
    )
    data_device = device if _fits(tables, device) else torch.device("cpu")
    g = build_graph_data(
        tables,
        backbones=groups,
        combine=combine,
        select=sel,
        levels=frozenset(levels),
        track_array="tracks/actor_track" if "tracks" in store.groups else "base/actor_track",
        num_object_classes=num_object_classes if objects else 0,
        device=data_device,
    )
    if bank_group:
        attach_bank(g, tables, bank_group, sel, path)
    return store, tables, g


def attach_bank(g: GraphData, tables, group: str, sel: np.ndarray, path: str) -> None:
    """Put the stored relation maps of the selected actors into g.actor_extras["bank_maps"]; every
    batch then carries them with their keyframes (GraphData.batch adds "bank_kf")."""
    sel_t = torch.from_numpy(np.asarray(sel, dtype=bool))
    written = tables.data.get(f"{group}/actor_in_bank")
    if written is not None:
        missing = sel_t & ~written.bool()
        if missing.any():
            raise ValueError(f"store {path}: {int(missing.sum())} of the selected actors have no entry in "
                             f"{group}/actor_maps (it was written for other boxes or a lower score threshold); "
                             "rewrite the bank with write-bank --boxes gt+proposals and a threshold at most this run's")
    g.actor_extras[BANK_MAPS] = tables.data[f"{group}/actor_maps"][sel_t].to(g.device)  # (A, C, H, W)


def _fits(tables, device: torch.device) -> bool:
    """Keep the whole split on the GPU when it takes under 60% of the free memory."""
    if device.type != "cuda":
        return True
    need = sum(t.numel() * t.element_size() for t in tables.data.values())
    free, _ = torch.cuda.mem_get_info(device)
    return need < 0.6 * free
