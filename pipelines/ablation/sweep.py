"""`ablate`: a sweep of `train-head` runs over one store pair (train + val), and its tables.

A spec (YAML preset, YAML file or command-line flags) names configurations -- a head, its
switches (`head_args`), optional grids (e.g. num_heads x num_layers) -- plus seeds and the shared
`TrainArgs` fields. Every (configuration, grid point, seed) is one `pipelines.training.train.train` run in
`OUT/runs/<config>-s<seed>`; a run whose directory holds `summary.json` is finished and skipped on
a rerun, an interrupted one (last.pt without summary.json) is resumed. The runs are executed
(`pipelines/ablation/jobs.py`) by a process pool on this machine (`--executor process`, the default)
or as submitit jobs (`local`, `slurm`: one job per run); each finished run also writes an hparams
summary for TensorBoard (`tensorboard --logdir OUT/runs`). The report
(`pipelines/ablation/report.py`) then writes results.csv, results.md, the per-group table, the grid
table and the per-class gain plots.

The spec format is documented in `pipelines/ablation/spec.py`. A configuration whose head needs a
store level the stores lack (`head.requires`) is recorded as "skipped: needs <level>" instead of
failing the sweep; a head argument the head does not take (unknown key, wrong type: spec.py; a value
its head refuses at the stores' dims: `preflight_runs`) is one error line before any run starts.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from stagecache.heads import build_head
from stagecache.pipelines.ablation.ablate_args import AblateArgs  # also imported from here (its module imports no torch)
from stagecache.pipelines.ablation.jobs import Run, execute, make_submitter
from stagecache.pipelines.ablation.spec import Spec, load_spec, parse_spec, spec_from_flags
from stagecache.pipelines.training.steps import resolve_device
from stagecache.pipelines.training.train import TrainArgs


# ----------------------------------------------------------------------------- store levels


def store_levels(path: str) -> set[str]:
    """Which `head.requires` levels a store can serve."""
    from stagecache.extract.store import LEVELS, open_store

    store = open_store(path)
    have = set()
    base = store.array_info("base")
    if store.num_objects > 0 and "object_feature" in base:
        have.add("objects")
    for g in store.groups:
        info = store.array_info(g)
        have.update(name for name, level in LEVELS.items() if level.array in info)
    if "tracks" in store.groups:
        have.add("tracks")
    elif "actor_track" in base and store.num_actors > 0:
        track = store.load({"base": ["actor_track"]}).data["base/actor_track"]
        if bool((track >= 0).any()):
            have.add("tracks")
    return have


def head_requires(head: str, head_args: dict) -> frozenset[str]:
    """`requires` of a head with these arguments, read from a tiny instance: a sweep plans its runs
    before any store dims are read, and a head's `requires` may depend on its arguments."""
    return frozenset(build_head(head, actor_dim=8, object_dim=8, num_classes=2, **head_args).requires)


# ----------------------------------------------------------------------------- arguments (AblateArgs: ablate_args.py)


def resolve_spec(args: AblateArgs) -> Spec:
    if args.heads:
        data, where = spec_from_flags(args.heads, args.head_args, args.grid), "command line"
    else:
        data, where = load_spec(args.preset or None, args.spec_file or None)
        if args.head_args or args.grid:
            raise ValueError("--head-arg and --grid only go with --head (edit the spec file instead)")
    data = dict(data)
    if args.seeds:
        data["seeds"] = list(args.seeds)
    if args.baseline:
        data["baseline"] = args.baseline
    spec = parse_spec(data, where)
    spec.train = {**spec.train, **args.train}
    return spec


def plan_runs(spec: Spec, args: AblateArgs, levels: set[str] | None = None) -> list[Run]:
    """Every (configuration, seed) run with its TrainArgs, or the reason it is skipped."""
    runs = []
    for c in spec.configs:
        reason = f"skipped: {c.unavailable}" if c.unavailable else ""
        if not reason:
            try:
                need = head_requires(c.head, c.head_args)
            except (TypeError, ValueError):  # maybe only at these tiny dims: `preflight_runs` builds it at the stores'
                need = frozenset()
            if levels is not None:
                missing = sorted(need - levels)
                if missing:
                    reason = f"skipped: needs {', '.join(missing)}"
        for seed in spec.seeds:
            run_dir = Path(args.out) / "runs" / f"{c.name}-s{seed}"
            targs = {**spec.train, **c.train, "train_store": args.train_store, "val_store": args.val_store,
                     "head": c.head, "head_args": dict(c.head_args), "seed": int(seed), "out_dir": str(run_dir),
                     "progress": args.progress}
            runs.append(Run(config=c, seed=int(seed), run_dir=str(run_dir), targs=targs, skip_reason=reason))
    return runs


def preflight_runs(runs: list[Run]) -> None:
    """train-head's preflight (pipelines/training/train.py) once per configuration that will run, before
    the first run starts: its head built at the stores' dims, what it reads checked in both stores.
    A head argument value the head refuses is then one line naming the configuration, not a row
    marked skipped or a sweep of failed runs."""
    from dataclasses import replace

    from stagecache.core.errors import UserError
    from stagecache.pipelines.ablation.spec import SpecError
    from stagecache.pipelines.training.train import preflight_train

    seen = set()
    for r in runs:
        if r.skip_reason or r.config.name in seen:
            continue
        seen.add(r.config.name)
        try:  # resume=True: a run directory of an earlier sweep is the resumable kind (jobs.run_state decides)
            preflight_train(replace(TrainArgs(**r.targs), resume=True))
        except UserError as e:
            raise SpecError(f"config {r.config.name}: {e}") from None


def ablate(args: AblateArgs, echo=print) -> dict:
    """Run the sweep and write the results directory.
    Returns {"out": Path, "status": run name -> 'done' | 'failed: ...' | 'skipped: ...', "report": ...}."""
    from stagecache.pipelines.ablation import report as ablate_report

    spec = resolve_spec(args)
    out = Path(args.out)
    submitter = make_submitter(args.executor, out / "logs", args)  # a refusal before anything is written
    out.mkdir(parents=True, exist_ok=True)
    levels = store_levels(args.train_store) & store_levels(args.val_store)
    runs = plan_runs(spec, args, levels)
    # Check every run's TrainArgs before the first (long) training starts.
    for r in runs:
        if not r.skip_reason:
            try:
                TrainArgs(**r.targs)
            except (TypeError, ValueError) as e:
                raise ValueError(f"config {r.config.name}: {e}") from None
    preflight_runs(runs)
    (out / "spec.json").write_text(json.dumps(
        {"spec": spec.to_json(), "args": asdict(args), "store_levels": sorted(levels),
         "device": str(resolve_device(spec.train.get("device", "auto"))),
         "runs": [{"name": r.name, "config": r.config.name, "seed": r.seed, "run_dir": r.run_dir,
                   "skip": r.skip_reason} for r in runs]}, indent=2))
    # Slurm: the threads of the task's allocation (--cpus, else torch's); local: this machine's cores shared.
    threads = (args.cpus or 0) if args.executor == "slurm" else -1
    status = execute(runs, jobs=args.jobs, submitter=submitter, threads=threads, echo=echo)
    report = ablate_report.write_report(out, spec, runs, status, train_store=args.train_store,
                                        groups_file=args.groups, top_k=args.top_k)
    failed = [n for n, s in status.items() if s.startswith("failed")]
    if failed:
        echo(f"[ablate] {len(failed)} run(s) failed:")
        for n in failed:
            echo(f"  {n}: {status[n]}")
    return {"out": out, "status": status, "report": report}
