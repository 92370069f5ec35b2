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

import numpy as np
import torch

from stagecache.core.boxes import select_actors
from stagecache.core.errors import UserError
from stagecache.extract.store import LEVEL_OF_ARRAY, LEVELS, open_store
from stagecache.extract.store.io import axis_of
from stagecache.heads import Head
from stagecache.pipelines.training.split_batches import BANK_MAPS, GraphData, build_graph_data


class PreflightError(UserError, ValueError):
    """A run that cannot work with the stores / options given."""


class NonFiniteError(UserError, ValueError):
    """A loaded float array holds NaN or Inf (one line: store, group, array, first row, video)."""


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
    """One loaded split: the store, its tables (`FeatureStore.load`) and the run's tensors."""

    spec: SplitSpec
    store: object  # extract.store.FeatureStore
    tables: object  # extract.store.Tables
    graph: GraphData


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


def load(store, spec: SplitSpec, *, groups: Sequence[str], levels: Sequence[str], device: torch.device,
         combine: str = "mean", bank_group: str = "", num_object_classes: int = 0, objects: bool = True) -> Split:
    """Load what a head needs of an opened store (its `levels`, the `bank_group` of a bank head, the
    object features only with `objects`), check that its float arrays are finite, and select the
    actors of `spec`. Without `objects` the objects keep their boxes and classes, with 0-d features."""
    select = {"base": None if objects else [n for n in store.array_info("base") if n != "object_feature"]}
    for g in groups:  # None above: every array of the group
        select[g] = ["actor_pooled"] + [lv for lv in levels if lv in store.array_info(g)]
    if "tracks" in store.groups:
        select["tracks"] = ["actor_track"]
    if bank_group:
        if bank_group not in store.groups or "actor_maps" not in store.array_info(bank_group):
            raise PreflightError(f"store {store.path} has no {bank_group}/actor_maps; write the bank first "
                                 f"(write-bank --run <bank-free run> --store {store.path} --group {bank_group})")
        select[bank_group] = ["actor_maps"] + (
            ["actor_in_bank"] if "actor_in_bank" in store.array_info(bank_group) else [])
    tables = store.load(select)
    check_finite(tables, store.path, spec.role)  # on what was read: one read of the store, before any write
    sel = select_actors(tables.data["base/actor_is_gt"].bool().numpy(), tables.data["base/actor_score"].float().numpy(),
                        boxes=spec.boxes, score_threshold=spec.score_threshold)
    g = build_graph_data(
        tables, backbones=list(groups), combine=combine, select=sel, levels=frozenset(levels),
        track_array="tracks/actor_track" if "tracks" in store.groups else "base/actor_track",
        num_object_classes=num_object_classes if objects else 0,
        device=device if _fits(tables, device) else torch.device("cpu"),
    )
    if bank_group:
        _attach_bank(g, tables, bank_group, sel, store.path)
    return Split(spec, store, tables, g)


def load_split(spec: SplitSpec, *, levels: Sequence[str], device: torch.device, backbones: Sequence[str] = (),
               combine: str = "mean", bank_group: str = "", num_object_classes: int = 0, objects: bool = True) -> Split:
    """One store opened and loaded as `load` does, without a run's checks (benchmarks, tests)."""
    store = open_store(spec.path)
    return load(store, spec, groups=backbone_groups(store, backbones, spec.role), levels=levels, device=device,
                combine=combine, bank_group=bank_group, num_object_classes=num_object_classes, objects=objects)


def _attach_bank(g: GraphData, tables, group: str, sel: np.ndarray, path: str) -> None:
    """Put the stored relation maps of the selected actors into g.actor_extras["bank_maps"]; every
    batch then carries them with their keyframes (GraphData.batch adds "bank_kf")."""
    sel_t = torch.from_numpy(np.asarray(sel, dtype=bool))
    written = tables.data.get(f"{group}/actor_in_bank")
    if written is not None:
        missing = sel_t & ~written.bool()
        if missing.any():
            raise PreflightError(f"store {path}: {int(missing.sum())} of the selected actors have no entry in "
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

    def load(self, device: torch.device) -> list[Split]:
        """The splits, in the order of `specs`: every float array read checked finite."""
        return [load(store, spec, groups=groups, levels=self.levels, device=device, combine=self.combine,
                     bank_group=self.bank_group, num_object_classes=self.num_object_classes,
                     objects=reads_objects(self.head))
                for spec, store, groups in zip(self.specs, self.stores, self.groups)]


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
    return groups


def open_run_splits(run, cfg: dict, head: Head, specs: Sequence[SplitSpec], device: torch.device, *,
                    bank: bool = True) -> list[Split]:
    """Stores read the way a trained run (its saved config `cfg`, its `head`) reads them: its feature
    groups, levels, object classes, object features if the head reads them and, with `bank`, its
    bank group; each checked against the run (`_check_run_store`) before any is loaded."""
    run_cfg = cfg if bank else cfg | {"bank_group": ""}
    opened = []
    for spec in specs:
        store = open_store(spec.path)
        opened.append((store, spec, _check_run_store(store, spec.role, run_cfg, run)))
    return [load(store, spec, groups=groups, levels=cfg["levels"], device=device, combine=cfg["combine"],
                 bank_group=run_cfg.get("bank_group", ""), num_object_classes=cfg.get("num_object_classes", 0),
                 objects=reads_objects(head))
            for store, spec, groups in opened]


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
               "bank_group": cfg.get("bank_group", "")}
    except (ValueError, KeyError, TypeError) as e:
        raise PreflightError(f"{run / 'config.json'}: not a train-head config ({type(e).__name__}: {e})") from None
    _check_run_store(open_store(store_path), "predict", cfg, run)
