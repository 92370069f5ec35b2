"""A store as a run reads it: opened, checked and loaded in one pass. The loop asks this module,
and only it, for its data.

    check_training_stores train-head: both stores opened and checked from their metadata (feature
                          groups, dims, label maps), the head built at their dims by the loop's
                          `build`, what it declares (levels, objects, a bank) checked in each
                          store; then `.load(device)`: the `Split`s.
    open_run_splits       a trained run (its saved config and head) over stores: predict,
                          write-bank, visualize, class-balanced retraining.
    check_predict         predict's checks from the run directory, before its checkpoint loads.

Every problem is one line naming the store, group and array: a `PreflightError` before anything
is loaded, a `NonFiniteError` for NaN/Inf found in what was loaded (checked on the loaded tensors:
checking them beforehand would read every array of the store twice). Nothing is written here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from stagecache.core.boxes import select_actors
from stagecache.extract.store import LEVEL_OF_ARRAY, LEVELS, open_store
from stagecache.heads import Head
from stagecache.pipelines.training.sources import NonFiniteError, PreflightError
from stagecache.pipelines.training.split_read import (ReadPlan, Split, SplitSpec, check_finite, load_resident,
                                                      load_splits, nonfinite_rows, split_size)

# Re-exported: the names every caller of a split imports from here.
__all__ = ["PreflightError", "NonFiniteError", "SplitSpec", "Split", "ReadPlan", "check_training_stores",
           "open_run_splits", "check_predict", "load_split", "check_finite", "nonfinite_rows"]

# ----------------------------------------------------------------------------- what a head reads


def head_levels(head: Head) -> list[str]:
    """The store arrays of the optional levels a head declares it reads (`head.requires`)."""
    return [LEVELS[r].array for r in sorted(head.requires) if r in LEVELS]


def reads_objects(head: Head) -> bool:
    """Whether a head reads object features ("objects" in `head.requires`): they are left unread
    otherwise (on AVA-sized stores the largest array by far)."""
    return "objects" in head.requires


def store_label_ids(store) -> list[int]:
    return [int(i) for i in store.attrs.get("label_ids") or []]


def backbone_groups(store, wanted: Sequence[str], role: str = "") -> list[str]:
    """The feature groups to use: the requested ones, or the store's only one."""
    have = [g for g in store.groups if g != "base" and "actor_pooled" in store.array_info(g)]
    lead = f"{role} store" if role else "store"
    if wanted:
        missing = [b for b in wanted if b not in have]
        if missing:
            raise PreflightError(f"{lead} {store.path}: no group {missing[0]!r} with array actor_pooled "
                                 f"(--backbone); groups with features: {sorted(have) or 'none'}")
        return list(wanted)
    have = [g for g in have if "layer_of" not in store.groups.get(g, {})] or have  # not extract --layers' groups
    if len(have) != 1:
        raise PreflightError(f"{lead} {store.path}: holds the features of {sorted(have) or 'no backbone group'}"
                             f"; choose with --backbone")
    return have


def object_class_count(*paths_or_stores) -> int:
    """Width of the one-hot object feature used when a store holds object boxes without detector
    features: the longest class list of the stores (train and val must agree on it)."""
    stores = [open_store(s) if isinstance(s, (str, Path)) else s for s in paths_or_stores]
    return max(len(s.attrs.get("object_classes") or []) for s in stores)


def feature_dims(store, groups: Sequence[str], combine: str, num_object_classes: int = 0) -> tuple[int, int]:
    """(actor_dim, object_dim) of the tensors `load` builds from `groups`, read from the store's
    array shapes (the rules of `split_batches.build_graph_data`)."""
    dims = [store.array_info(g)["actor_pooled"][0][1] for g in groups]
    actor_dim = sum(dims) if combine == "concat" else dims[0]
    obj = store.array_info("base").get("object_feature")
    if obj is not None and obj[0][-1] > 0:
        return actor_dim, int(obj[0][-1])
    return actor_dim, max(int(num_object_classes), 0)


def _actor_dim(store, role: str, groups: list[str], combine: str) -> int:
    dims = [store.array_info(g)["actor_pooled"][0][1] for g in groups]
    if combine == "mean" and len(set(dims)) > 1:
        raise PreflightError(f"{role} store {store.path}: --combine mean needs equal feature dims, groups "
                             f"{groups} have actor_pooled dims {dims}; use --combine concat")
    return feature_dims(store, groups, combine)[0]


# ----------------------------------------------------------------------------- checks before loading


def _used_arrays(store, role: str, groups: list[str], levels: list[str], bank_group: str) -> dict[str, list[str]]:
    """group -> arrays the run will read, after checking each exists and is complete."""
    if "base" not in store.groups:
        raise PreflightError(f"{role} store {store.path}: no group base (boxes and labels); extract it first")
    used = {"base": sorted(store.array_info("base"))}
    for i, g in enumerate(groups):
        used[g] = ["actor_pooled"]
        have = store.array_info(g)
        for lv in levels:
            if lv in have:
                used[g].append(lv)
            elif i == 0:  # levels are read from the first backbone (split_batches.build_graph_data)
                raise PreflightError(f"{role} store {store.path}: group {g} has no array {lv}, which the head needs; "
                                     f"extract it with --save {LEVEL_OF_ARRAY[lv].name}")
    if bank_group:
        if bank_group not in store.groups or "actor_maps" not in store.array_info(bank_group):
            raise PreflightError(f"{role} store {store.path}: no group {bank_group} with array actor_maps "
                                 f"(--bank-group); write the bank first with write-bank")
        used[bank_group] = [n for n in ("actor_maps", "actor_in_bank") if n in store.array_info(bank_group)]
    for g in used:
        missing = store.missing(g)
        if missing:
            raise PreflightError(f"{role} store {store.path}: group {g} lacks {len(missing)} video(s) of base "
                                 f"(e.g. {missing[0]}); finish or resume its extraction")
    return used


def _check_selection(store, spec: SplitSpec) -> None:
    t = store.load({"base": ["actor_is_gt", "actor_score"]}).data
    is_gt, score = t["base/actor_is_gt"].bool().numpy(), t["base/actor_score"].float().numpy()
    if not select_actors(is_gt, score, boxes=spec.boxes, score_threshold=spec.score_threshold).any():
        opt = "--train" if spec.role == "train" else "--val"
        raise PreflightError(f"{spec.role} store {store.path}: no actors with {opt}-boxes {spec.boxes} and "
                             f"{opt}-score-threshold {spec.score_threshold:g} ({int(is_gt.sum())} GT rows, "
                             f"{int((~is_gt).sum())} proposal rows) in group base, arrays actor_is_gt/actor_score")


def _check_same(used: dict[str, dict[str, list[str]]], stores: dict) -> None:
    """The train and val stores: one label map, equal feature dims in every array both read."""
    tr, va = stores["train"], stores["val"]
    for key in ("label_ids", "label_names"):
        if list(tr.attrs.get(key) or []) != list(va.attrs.get(key) or []):
            raise PreflightError(f"train store {tr.path} and val store {va.path} have different {key} "
                                 f"(root attributes); both must be extracted with the same label map")
    for g, names in used["train"].items():
        for n in names:
            if n not in used["val"].get(g, []):
                continue
            a, b = tr.array_info(g)[n][0][1:], va.array_info(g)[n][0][1:]
            if a != b:
                raise PreflightError(f"feature dims differ: train store {tr.path} group {g} array {n} is {list(a)}, "
                                     f"val store {va.path} is {list(b)}")


# ----------------------------------------------------------------------------- loading


def load_split(spec: SplitSpec, *, levels: Sequence[str], device: torch.device, backbones: Sequence[str] = (),
               combine: str = "mean", bank_group: str = "", num_object_classes: int = 0, objects: bool = True,
               source: str = "resident", budget: int = 0) -> Split:
    """One store opened and loaded resident (or, with `source` "streamed", streamed within `budget`
    bytes of chunks), without a run's checks (benchmarks, tests)."""
    from stagecache.pipelines.training.split_read import load_streamed

    store = open_store(spec.path)
    plan = ReadPlan(backbone_groups(store, backbones, spec.role), list(levels), combine, bank_group,
                    num_object_classes, objects)
    if source == "streamed":
        return load_streamed(store, spec, plan, device, budget)
    return load_resident(store, spec, plan, device)


# ----------------------------------------------------------------------------- the entry points


@dataclass
class TrainingStores:
    """Both stores of a train-head run, opened and checked (`check_training_stores`), nothing
    loaded yet; `load` reads them."""

    head: Head
    specs: list[SplitSpec]
    stores: list
    groups: list[list[str]]
    label_ids: list[int]
    actor_dim: int
    object_dim: int
    num_object_classes: int
    levels: list[str]
    combine: str
    bank_group: str

    def load(self, device: torch.device, *, memory_budget: str = "", split_source: str = "auto",
             say=None) -> list[Split]:
        """The splits, in the order of `specs`, each resident or streamed (`split_read.load_splits`:
        --memory-budget, --split-source); every float array read checked finite."""
        plans = [ReadPlan(groups, self.levels, self.combine, self.bank_group, self.num_object_classes,
                          reads_objects(self.head)) for groups in self.groups]
        return load_splits(list(zip(self.stores, self.specs, plans)), device, memory_budget=memory_budget,
                           split_source=split_source, say=say)


def check_training_stores(train: SplitSpec, val: SplitSpec, *, build: Callable[..., Head],
                          backbones: Sequence[str] = (), combine: str = "mean", bank_group: str = "") -> TrainingStores:
    """train-head's stores, opened and checked from their metadata and small arrays: feature groups
    and dims, the head built once by `build(actor_dim=, object_dim=, num_classes=)` at the train
    store's dims (its `requires` decide what is checked), every array it reads present and complete
    in both stores, one label map, equal dims, non-empty actor selections. Reads no feature array."""
    specs = [train, val]
    stores = [open_store(s.path) for s in specs]
    groups = [backbone_groups(st, list(backbones), s.role) for st, s in zip(stores, specs)]
    for st, s, g in zip(stores, specs, groups):
        _actor_dim(st, s.role, g, combine)
    n_obj_cls = object_class_count(*stores)
    actor_dim, object_dim = feature_dims(stores[0], groups[0], combine, n_obj_cls)
    head = build(actor_dim=actor_dim, object_dim=object_dim, num_classes=len(store_label_ids(stores[0])))
    levels = head_levels(head)
    used = {s.role: _used_arrays(st, s.role, g, levels, bank_group) for st, s, g in zip(stores, specs, groups)}
    _check_same(used, dict(zip(("train", "val"), stores)))
    for st, s in zip(stores, specs):
        _check_selection(st, s)
    return TrainingStores(head, specs, stores, groups, store_label_ids(stores[0]), actor_dim, object_dim, n_obj_cls,
                          levels, combine, bank_group)


def _check_run_store(store, role: str, cfg: dict, run) -> list[str]:
    """A store against a trained run's config: its feature groups with the run's actor dim, the
    levels and bank group it read, and its label ids. Returns the groups."""
    groups = backbone_groups(store, list(cfg["backbones"]), role)
    _used_arrays(store, role, groups, list(cfg["levels"]), cfg.get("bank_group", ""))
    got = _actor_dim(store, role, groups, cfg["combine"])
    if got != int(cfg["actor_dim"]):
        raise PreflightError(f"{role} store {store.path}: groups {groups} give {got}-d actor features "
                             f"(array actor_pooled), the run {run} was trained on {cfg['actor_dim']}-d ones")
    if store_label_ids(store) != [int(i) for i in cfg["label_ids"]]:
        raise PreflightError(f"{role} store {store.path} has other label_ids (root attributes) than the run {run}")
    _check_label_names(store, role, cfg, run)
    return groups


def _check_label_names(store, role: str, cfg: dict, run) -> None:
    """Same ids, other names: a store extracted with another label map, whose columns would be read
    as the run's classes. Runs whose config predates `label_names` are not checked."""
    want = cfg.get("label_names")
    have = [str(n) for n in store.attrs.get("label_names") or []]
    if want is None or have == [str(n) for n in want]:
        return
    diff = [(i, a, b) for i, a, b in zip(cfg["label_ids"], have, want) if a != str(b)]
    i, a, b = diff[0] if diff else (None, f"{len(have)} names", f"{len(want)} names")
    raise PreflightError(f"{role} store {store.path} names its classes unlike the run {run} (same label ids; root "
                         f"attributes label_names{f', id {i}' if i is not None else ''}: {a!r} in the store, {b!r} in "
                         f"the run); extract the store with the run's label map")


def open_run_splits(run, cfg: dict, head: Head, specs: Sequence[SplitSpec], device: torch.device, *,
                    bank: bool = True, memory_budget: str = "", split_source: str = "auto") -> list[Split]:
    """Stores read the way a trained run (its saved config `cfg`, its `head`) reads them: its feature
    groups, levels, object classes, object features if the head reads them and, with `bank`, its
    bank group; each checked against the run (`_check_run_store`) before any is loaded, then
    resident or streamed as `split_read.load_splits` chooses."""
    run_cfg = cfg if bank else cfg | {"bank_group": ""}
    opened = []
    for spec in specs:
        store = open_store(spec.path)
        opened.append((store, spec, _check_run_store(store, spec.role, run_cfg, run)))
    items = [(store, spec, ReadPlan(groups, list(cfg["levels"]), cfg["combine"], run_cfg.get("bank_group", ""),
                                    cfg.get("num_object_classes", 0), reads_objects(head)))
             for store, spec, groups in opened]
    return load_splits(items, device, memory_budget=memory_budget, split_source=split_source)


def check_predict(run_dir: str, checkpoint: str, store_path: str) -> None:
    """`predict`, before its checkpoint loads: the run's checkpoint and config exist, and the store
    holds what the run reads (`_check_run_store`); NaN/Inf are found when predict loads it."""
    run = Path(run_dir)
    if not (run / checkpoint).is_file():
        raise PreflightError(f"{run / checkpoint} not found: is {run} a finished train-head run?")
    if not (run / "config.json").is_file():
        raise PreflightError(f"{run / 'config.json'} not found: is {run} a train-head run directory?")
    try:
        cfg = json.loads((run / "config.json").read_text())
        cfg = {"backbones": list(cfg["backbones"]), "combine": cfg["combine"], "levels": list(cfg["levels"]),
               "label_ids": list(cfg["label_ids"]), "actor_dim": int(cfg["actor_dim"]),
               "bank_group": cfg.get("bank_group", ""), "label_names": cfg.get("label_names")}
    except (ValueError, KeyError, TypeError) as e:
        raise PreflightError(f"{run / 'config.json'}: not a train-head config ({type(e).__name__}: {e})") from None
    _check_run_store(open_store(store_path), "predict", cfg, run)


def memory_by_head(store) -> dict[str, dict[str, int]]:
    """`cache info`: per head of HEADS (default arguments, no bank), the memory a split of `store`
    takes: resident (every array it reads) and the least a streamed source needs (its small arrays
    and two chunks of twice the largest video); {} without a base group and one feature group."""
    from stagecache.heads import HEADS, build_head

    try:
        groups = backbone_groups(store, [])
    except PreflightError:
        return {}
    out = {}
    for name in sorted(HEADS):
        head = build_head(name, actor_dim=8, object_dim=8, num_classes=2)  # what it reads, not its size
        levels = head_levels(head)
        if any(lv not in store.array_info(groups[0]) for lv in levels):
            continue  # the store cannot serve this head
        size = split_size(store, SplitSpec(store.path, "info", "gt+proposals", 0.0),
                          ReadPlan(groups, levels, objects=reads_objects(head)))
        out[name] = {"resident": int(size.resident), "streamed_min": int(size.small + 4 * size.largest_video()[1])}
    return out
