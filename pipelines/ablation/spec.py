"""The spec of an `ablate` sweep (pipelines/ablation/sweep.py): presets, parsing and validation of the
YAML (or command-line) mapping into configurations, grid points expanded.

Spec format (YAML):

    name: stage-table8              # free text
    reference: "STAGE, Table 8"     # free text, copied to results.md
    seeds: [0, 1, 2]
    train: {epochs: 20, batch_size: 6}   # shared TrainArgs fields
    baseline: linear                # configuration the per-class gains are measured against
    all_heads: false                # true: one configuration per head of heads.HEADS
    grid_table: {config: stage, rows: num_heads, cols: num_layers}   # optional
    configs:
      - name: linear                # unique; [A-Za-z0-9_.-]
        label: "Original backbone (linear)"
        head: linear
      - name: stage
        head: stage
        head_args: {proximity: false}
        grid: {num_heads: [2, 4, 8], num_layers: [1, 2, 3]}   # one configuration per point
        train: {lr: 1.0e-4}         # per-configuration TrainArgs overrides
      - name: aia
        unavailable: "AIA is not implemented"   # listed as skipped, never run
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from stagecache.core.errors import UserError
from stagecache.core.registry_names import HEAD_NAMES
from stagecache.pipelines.training.train_args import TrainArgs

PRESET_DIR = Path(__file__).resolve().parent / "presets"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
# TrainArgs fields the sweep sets per run; a spec may not set them in `train:`.
_MANAGED = {"train_store", "val_store", "head", "head_args", "out_dir", "seed", "resume", "command_line"}
# TrainArgs fields of what train-head does after train(): a sweep runs train() alone, so it refuses them.
AFTER_TRAIN = {"retrain_classifier", "retrain_epochs"}
_CONFIG_KEYS = {"name", "label", "head", "head_args", "grid", "train", "unavailable"}
_SPEC_KEYS = {"name", "reference", "description", "seeds", "train", "baseline", "all_heads", "grid_table", "configs"}


class SpecError(UserError, ValueError):
    """A spec whose configurations cannot run (a head argument the head does not take): refused
    before any run starts, never a run marked skipped."""


def presets() -> dict[str, Path]:
    """Preset name -> YAML file shipped in pipelines/ablation/presets."""
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def _train_fields() -> set[str]:
    return {f.name for f in fields(TrainArgs)}


def check_train_dict(d, where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{where}: 'train' must be a mapping of TrainArgs fields, got {type(d).__name__}")
    valid = _train_fields() - _MANAGED - AFTER_TRAIN
    bad = sorted(set(d) - valid)
    if bad:
        raise ValueError(f"{where}: unknown or managed train field(s) {bad}; valid: {', '.join(sorted(valid))}")
    return dict(d)


def parse_pairs(pairs) -> dict:
    """`--head-arg` / `--train-arg KEY=VALUE` for a sweep over several heads, so untyped: true/false/
    yes/no -> bool, else JSON, else the string. Each run's train() checks the head keywords against
    the head's signature (pipelines/training/head_args.py) before it writes anything."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        low = value.strip().lower()
        if low in ("true", "yes", "false", "no"):
            out[key] = low in ("true", "yes")
        else:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
    return out


def parse_grid(pairs) -> dict[str, list]:
    """`--grid num_heads=2,4,8` -> {"num_heads": [2, 4, 8]} (values as `parse_pairs`)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"expected KEY=V1,V2,..., got {pair!r}")
        key, values = pair.split("=", 1)
        out[key] = [parse_pairs((f"v={v}",))["v"] for v in values.split(",") if v.strip()]
    return out


@dataclass
class Config:
    """One configuration after grid expansion: what a row of results.md is."""

    name: str
    head: str
    label: str = ""
    head_args: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)  # per-configuration TrainArgs overrides
    grid_values: dict = field(default_factory=dict)  # the grid point, e.g. {"num_heads": 2, "num_layers": 1}
    source: str = ""  # the spec entry it was expanded from
    unavailable: str = ""  # reason it can never run (not implemented)


@dataclass
class Spec:
    name: str
    configs: list[Config]
    seeds: list[int]
    train: dict = field(default_factory=dict)
    baseline: str = ""
    reference: str = ""
    grid_table: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _expand_entry(entry: dict, where: str) -> list[Config]:
    # heads (torch): imported when a spec is expanded, not by `ablate --help` (issue 32)
    from stagecache.pipelines.training.head_args import HeadArgError, check_head_kwargs

    if not isinstance(entry, dict):
        raise ValueError(f"{where}: each config must be a mapping, got {entry!r}")
    bad = sorted(set(entry) - _CONFIG_KEYS)
    if bad:
        raise ValueError(f"{where}: unknown key(s) {bad}; valid: {', '.join(sorted(_CONFIG_KEYS))}")
    name = entry.get("name") or entry.get("head")
    if not name:
        raise ValueError(f"{where}: a config needs a 'name' or a 'head'")
    if entry.get("unavailable"):
        return [Config(name=str(name), head=str(entry.get("head", "")), label=str(entry.get("label", name)),
                       source=str(name), unavailable=str(entry["unavailable"]))]
    head = entry.get("head")
    if head not in HEAD_NAMES:
        raise ValueError(f"{where} ({name}): unknown head {head!r}; valid heads: {', '.join(sorted(HEAD_NAMES))}")
    head_args = entry.get("head_args") or {}
    if not isinstance(head_args, dict):
        raise ValueError(f"{where} ({name}): head_args must be a mapping")
    train_over = check_train_dict(entry.get("train"), f"{where} ({name})")
    grid = entry.get("grid") or {}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise ValueError(f"{where} ({name}): grid must map a head argument to a non-empty list of values")
    label = str(entry.get("label", name))
    out = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        point = dict(zip(keys, values))
        if not point:
            cname = str(name)
        elif "{" in str(name):
            cname = str(name).format(**point)
        else:
            cname = f"{name}-" + "-".join(f"{k}{v}" for k, v in point.items())
        try:  # every key and value typed by the head's signature, as train-head's --head-arg
            check_head_kwargs(head, {**head_args, **point})
        except HeadArgError as e:
            raise SpecError(f"{where} ({cname}): {e}") from None
        out.append(Config(name=cname, head=head, label=label.format(**point) if "{" in label else
                          (label + (" " + ", ".join(f"{k}={v}" for k, v in point.items()) if point else "")),
                          head_args={**head_args, **point}, train=train_over, grid_values=point,
                          source=str(name)))
    return out


def parse_spec(data: dict, where: str = "spec") -> Spec:
    """A spec mapping (as loaded from YAML) -> Spec, validated, grids expanded."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping at the top level")
    bad = sorted(set(data) - _SPEC_KEYS)
    if bad:
        raise ValueError(f"{where}: unknown key(s) {bad}; valid: {', '.join(sorted(_SPEC_KEYS))}")
    entries = list(data.get("configs") or [])
    if data.get("all_heads"):
        have = {e.get("head") for e in entries if isinstance(e, dict)}
        entries += [{"name": h, "head": h} for h in HEAD_NAMES if h not in have]
    if not entries:
        raise ValueError(f"{where}: no configs (give 'configs' or 'all_heads: true')")
    configs: list[Config] = []
    for i, e in enumerate(entries):
        configs += _expand_entry(e, f"{where}: configs[{i}]")
    names = [c.name for c in configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: duplicate config name(s) {dup}")
    for n in names:
        if not _NAME_RE.match(n):
            raise ValueError(f"{where}: config name {n!r} may only hold letters, digits, '_', '.', '-'")
    seeds = data.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds or not all(isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    baseline = str(data.get("baseline") or "")
    if baseline and baseline not in names:
        raise ValueError(f"{where}: baseline {baseline!r} is not a config; configs: {', '.join(names)}")
    gt = data.get("grid_table") or {}
    if gt:
        if not isinstance(gt, dict) or set(gt) != {"config", "rows", "cols"}:
            raise ValueError(f"{where}: grid_table needs exactly 'config', 'rows', 'cols'")
        src = [c for c in configs if c.source == gt["config"]]
        if not src or any({gt["rows"], gt["cols"]} - set(c.grid_values) for c in src):
            raise ValueError(f"{where}: grid_table config {gt['config']!r} must be a config with a grid over "
                             f"{gt['rows']!r} and {gt['cols']!r}")
    return Spec(name=str(data.get("name", where)), configs=configs, seeds=[int(s) for s in seeds],
                train=check_train_dict(data.get("train"), where), baseline=baseline,
                reference=str(data.get("reference", "")), grid_table=dict(gt))


def load_spec(preset: str | None = None, spec_file: str | None = None) -> tuple[dict, str]:
    """The raw spec mapping of a preset name or a YAML file, and where it came from."""
    if preset and spec_file:
        raise ValueError("give either a preset or a spec file, not both")
    if preset:
        known = presets()
        if preset not in known:
            raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(known)}")
        spec_file = str(known[preset])
    if not spec_file:
        raise ValueError("no spec: give a preset, a spec file or --head")
    try:
        with open(spec_file) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(f"{spec_file}: not valid YAML: {e}") from None
    return data, spec_file


def spec_from_flags(heads: list[str], head_args: dict, grid: dict[str, list]) -> dict:
    """The raw spec mapping of `--head/--head-arg/--grid` flags: one config per head."""
    return {"name": "command-line", "configs": [
        {"name": h, "head": h, "head_args": dict(head_args), **({"grid": grid} if grid else {})} for h in heads]}
