"""Checks `train-head` runs before anything is written or trained: head keywords, run directory, and
both stores (groups, levels the head requires, feature dims, label maps, selected actors;
`open_store` itself refuses a schema_version other than its own in the root, group metadata and
manifests), from the stores' metadata and small arrays. Every problem is a `PreflightError` (a
`UserError`) whose message names the store, group and array (or the --head-arg), so a bad run
fails in seconds, not after an epoch, and leaves no run directory behind. NaN/Inf in the feature
arrays are found as the splits load (`split_load.check_finite`, still before any write): checking
them here would read every array of the store a second time.

`--head-arg KEY=VALUE` values are parsed by the type the head's signature gives KEY (booleans
strictly: true/false/yes/no/1/0), and unknown keys are refused with the valid ones listed.
"""
from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

from stagecache.core.errors import UserError
from stagecache.extract.store import LEVEL_OF_ARRAY, open_store
from stagecache.pipelines.training.split_load import feature_dims, head_levels, object_class_count

__all__ = ["PreflightError", "HeadArgError", "RunExistsError", "RUN_CHECKPOINT_HINT", "head_parameters",
           "parse_head_args", "check_head_kwargs", "preflight_train", "preflight_predict"]


class PreflightError(UserError, ValueError):
    """A training run that cannot work with the stores / options given."""


class HeadArgError(PreflightError):
    """A --head-arg (or preset head_args) key or value the head does not take."""


class RunExistsError(UserError, FileExistsError):
    """--out already holds a run and --resume was not given."""


# what a refused run checkpoint's message ends with: the project's own hold only tensors and plain values
RUN_CHECKPOINT_HINT = "train-head checkpoints hold only tensors and plain values, so this one was not written by it"

# set from the stores, never by the user; `tokens` is what distinguishes tonly from sonly
_RESERVED = {"actor_dim", "object_dim", "num_classes", "tokens"}
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def _keywords(fn) -> tuple[dict[str, inspect.Parameter], bool]:
    """(keyword parameters of `fn` minus the reserved ones, whether it also takes **kw)."""
    sig = inspect.signature(fn).parameters.values()
    return ({p.name: p for p in sig if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _RESERVED},
            any(p.kind is p.VAR_KEYWORD for p in sig))


def head_parameters(head: str) -> dict[str, inspect.Parameter] | None:
    """The keywords `head` accepts (name -> parameter, annotation as written in the source); None
    for a head registered at run time whose factory only takes **kw (then nothing can be checked)."""
    from stagecache.heads import HEADS, head_callables

    if head not in HEADS:
        raise HeadArgError(f"unknown head {head!r}; valid heads: {', '.join(sorted(HEADS))}")
    params, var_kw = _keywords(HEADS[head])
    if not var_kw:
        return params
    try:
        callables = head_callables(head)
    except KeyError:
        return None
    params = {}
    for fn in callables:  # a builder first, then the class it forwards **kw to (the builder's defaults win)
        params = _keywords(fn)[0] | params
    return params


def _types(annotation) -> list[str] | None:
    """'int | None' -> ['int', 'None']; None for annotations this parser does not handle (then the
    value is read as JSON, else kept as a string)."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else str(annotation).replace("<class '", "").replace("'>", "")
    parts = [t.strip() for t in text.split("|")]
    return parts if set(parts) <= {"int", "float", "bool", "str", "None"} else None


def _parse_value(head: str, key: str, text: str, types: list[str] | None):
    where = f"--head-arg {key}={text}"
    if types is None:  # an annotation without a simple type: JSON, else the string
        try:
            return json.loads(text)
        except ValueError:
            return text
    low = text.strip().lower()
    if "None" in types and low in ("none", "null"):
        return None
    if "bool" in types:
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    if "int" in types:
        try:
            return int(text)
        except ValueError:
            pass
    if "float" in types:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None and math.isfinite(value):
            return value
    if "str" in types:
        return text
    expected = " or ".join("true/false/yes/no/1/0" if t == "bool" else t for t in types)
    raise HeadArgError(f"{where}: head {head} takes {key} as {expected}, got {text!r}")


def parse_head_args(head: str, pairs) -> dict:
    """`("num_layers=3", "temporal=no")` -> {"num_layers": 3, "temporal": False}, typed by `head`'s
    signature; an unknown key, a repeated key or a value of the wrong type is a `HeadArgError`."""
    params = head_parameters(head)
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise HeadArgError(f"--head-arg {pair}: expected KEY=VALUE")
        key, text = (s.strip() for s in pair.split("=", 1))
        if params is None:
            out[key] = _parse_value(head, key, text, None)
            continue
        if key not in params:
            raise HeadArgError(f"--head-arg {pair}: head {head} has no option {key!r}; "
                               f"its options: {', '.join(sorted(params)) or 'none'}")
        if key in out:
            raise HeadArgError(f"--head-arg {key} is given twice")
        out[key] = _parse_value(head, key, text, _types(params[key].annotation))
    return out


def check_head_kwargs(head: str, kwargs: dict) -> None:
    """Already-typed head keywords (a preset's head_args): known keys, values of the declared type."""
    params = head_parameters(head)
    for key, value in (kwargs.items() if params is not None else ()):
        if key not in params:
            raise HeadArgError(f"head {head} has no option {key!r} (head_args); "
                               f"its options: {', '.join(sorted(params)) or 'none'}")
        types = _types(params[key].annotation)
        if types is None:
            continue
        ok = ((value is None and "None" in types) or (isinstance(value, bool) and "bool" in types)
              or (isinstance(value, int) and not isinstance(value, bool) and ("int" in types or "float" in types))
              or (isinstance(value, float) and "float" in types) or (isinstance(value, str) and "str" in types))
        if not ok:
            raise HeadArgError(f"head {head} takes {key} as {' or '.join(types)}, got {value!r} (head_args)")


# ----------------------------------------------------------------------------- stores


def _backbones(store, wanted: list[str], role: str) -> list[str]:
    have = [g for g in store.groups if g != "base" and "actor_pooled" in store.array_info(g)]
    if wanted:
        missing = [b for b in wanted if b not in have]
        if missing:
            raise PreflightError(f"{role} store {store.path}: no group {missing[0]!r} with array actor_pooled "
                                 f"(--backbone); groups with features: {sorted(have) or 'none'}")
        return list(wanted)
    if len(have) != 1:
        raise PreflightError(f"{role} store {store.path}: holds the features of {sorted(have) or 'no backbone group'}"
                             f"; choose with --backbone")
    return have


def _actor_dim(store, role: str, groups: list[str], combine: str) -> int:
    """Width of the actor feature the run builds from `groups` (pipelines/training/split_batches.py)."""
    dims = [store.array_info(g)["actor_pooled"][0][1] for g in groups]
    if combine == "mean" and len(set(dims)) > 1:
        raise PreflightError(f"{role} store {store.path}: --combine mean needs equal feature dims, groups "
                             f"{groups} have actor_pooled dims {dims}; use --combine concat")
    return feature_dims(store, groups, combine)[0]


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
            elif i == 0:  # levels are read from the first backbone (pipelines/training/split_batches.py)
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


def _check_selection(store, role: str, boxes: str, threshold: float) -> None:
    from stagecache.core.boxes import select_actors

    t = store.load({"base": ["actor_is_gt", "actor_score"]}).data
    is_gt, score = t["base/actor_is_gt"].bool().numpy(), t["base/actor_score"].float().numpy()
    if not select_actors(is_gt, score, boxes=boxes, score_threshold=threshold).any():
        opt = "--train" if role == "train" else "--val"
        raise PreflightError(f"{role} store {store.path}: no actors with {opt}-boxes {boxes} and "
                             f"{opt}-score-threshold {threshold:g} ({int(is_gt.sum())} GT rows, "
                             f"{int((~is_gt).sum())} proposal rows) in group base, arrays actor_is_gt/actor_score")


def preflight_train(args):
    """Everything `pipelines.training.train.train(args)` will rely on, checked before it writes anything.
    Returns the head, built once at the train store's dims (its `requires` decide the levels
    checked): build it after seeding, as train() does, and train that one."""
    from stagecache.heads import build_head

    check_head_kwargs(args.head, args.head_args)
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise PreflightError(f"--out {out} exists and is not a directory")
    if (out / "last.pt").exists() and not args.resume:
        raise RunExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    stores, groups = {}, {}
    for role, path in (("train", args.train_store), ("val", args.val_store)):
        stores[role] = open_store(path)
        groups[role] = _backbones(stores[role], list(args.backbones), role)
        _actor_dim(stores[role], role, groups[role], args.combine)
    actor_dim, object_dim = feature_dims(stores["train"], groups["train"], args.combine,
                                         object_class_count(args.train_store, args.val_store))
    try:
        head = build_head(args.head, actor_dim=actor_dim, object_dim=object_dim,
                          num_classes=len(stores["train"].attrs.get("label_ids") or []), **args.head_args)
    except ValueError as e:
        raise HeadArgError(f"--head {args.head}: {e}") from None
    levels = head_levels(head)
    bank = head.bank  # declared by the head (heads/protocol.py)
    if args.bank_group and not bank:
        raise HeadArgError(f"--bank-group {args.bank_group} needs a head built with a bank "
                           f"(e.g. --head acar --head-arg bank=true)")
    if bank and not args.bank_group:
        raise HeadArgError(f"head {args.head} with bank=true needs --bank-group (the group written by write-bank)")

    used = {role: _used_arrays(stores[role], role, groups[role], levels, args.bank_group)  # schema versions: open_store
            for role in stores}
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
    for role, boxes, thr in (("train", args.train_boxes, args.train_score_threshold),
                             ("val", args.val_boxes, args.val_score_threshold)):
        _check_selection(stores[role], role, boxes, thr)
    return head


def preflight_predict(run_dir: str, checkpoint: str, store_path: str) -> None:
    """`predict`: the run's checkpoint exists, and the store holds what the run reads (its feature
    groups with the same actor dim, the levels and bank group it used, its label map); NaN/Inf are
    found when predict loads it (`split_load.check_finite`)."""
    run = Path(run_dir)
    if not (run / checkpoint).is_file():
        raise PreflightError(f"{run / checkpoint} not found: is {run} a finished train-head run?")
    if not (run / "config.json").is_file():
        raise PreflightError(f"{run / 'config.json'} not found: is {run} a train-head run directory?")
    try:
        cfg = json.loads((run / "config.json").read_text())
        backbones, combine, levels = list(cfg["backbones"]), cfg["combine"], list(cfg["levels"])
        label_ids, actor_dim, bank = list(cfg["label_ids"]), int(cfg["actor_dim"]), cfg.get("bank_group", "")
    except (ValueError, KeyError, TypeError) as e:
        raise PreflightError(f"{run / 'config.json'}: not a train-head config ({type(e).__name__}: {e})") from None
    store = open_store(store_path)
    groups = _backbones(store, backbones, "predict")
    _used_arrays(store, "predict", groups, levels, bank)  # each exists and is complete
    got = _actor_dim(store, "predict", groups, combine)
    if got != actor_dim:
        raise PreflightError(f"predict store {store.path}: groups {groups} give {got}-d actor features "
                             f"(array actor_pooled), the run {run} was trained on {actor_dim}-d ones")
    if [int(i) for i in store.attrs.get("label_ids") or []] != label_ids:
        raise PreflightError(f"predict store {store.path} has other label_ids (root attributes) than the run {run}")
