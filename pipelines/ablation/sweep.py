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
failing the sweep.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stagecache.heads import HEADS, build_head
from stagecache.pipelines.ablation.jobs import IN_PROCESS, Run, execute, make_submitter
from stagecache.pipelines.ablation.spec import (Spec, check_train_dict, load_spec, parse_grid, parse_pairs, parse_spec,
                                                presets, spec_from_flags)
from stagecache.pipelines.launch.executors import ClusterArgs, LaunchError
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


# ----------------------------------------------------------------------------- arguments


@dataclass(kw_only=True)
class AblateArgs(ClusterArgs):
    """Arguments of `ablate`; each field's metadata is its CLI option (pipelines/commands/options.py);
    the cluster options (--executor slurm) are `ClusterArgs`'."""

    train_store: str = field(metadata={"help": "Feature store of the training split."})
    val_store: str = field(metadata={"help": "Feature store of the validation split."})
    out: str = field(metadata={"help": "Results directory (runs/ inside; rerun to resume)."})
    preset: str = field(default="", metadata={"help": f"Shipped spec: {', '.join(presets())}."})
    spec_file: str = field(default="", metadata={
        "help": "YAML spec file (format: pipelines/ablation/sweep.py docstring).", "option": "--spec"})
    heads: list[str] = field(default_factory=list, metadata={  # flags mode: one config per head
        "help": "Instead of a spec: one configuration per head (repeatable).", "option": "--head"})
    head_args: dict = field(default_factory=dict, metadata={
        "help": "With --head: head keyword for every configuration.", "option": "--head-arg", "parse": parse_pairs})
    grid: dict = field(default_factory=dict, metadata={
        "help": "With --head: grid over a head keyword (repeatable; product).", "metavar": "KEY=V1,V2",
        "parse": parse_grid})
    seeds: list[int] = field(default_factory=list, metadata={  # overrides the spec's
        "help": "Comma-separated seeds. Default: the spec's (presets: 0).", "sep": ","})
    # Shorthands for `train` entries (None: not given, the spec's value stands, else train-head's).
    epochs: int | None = field(default=None, metadata={
        "help": "Epoch cap for every run. Default: the spec's, else train-head's."})
    batch_size: int | None = field(default=None, metadata={
        "help": "Batch size for every run. Default: the spec's, else train-head's."})
    lr: float | None = field(default=None, metadata={
        "help": "Learning rate for every run. Default: the spec's, else each head's paper value."})
    device: str | None = field(default=None, metadata={
        "help": "auto, cpu, cuda or cuda:N. Default: the spec's, else auto."})
    train: dict = field(default_factory=dict, metadata={  # overrides the spec's shared TrainArgs fields
        "help": "Any other train-head field for every run, e.g. --train-arg val_boxes=gt.", "option": "--train-arg",
        "parse": parse_pairs})
    baseline: str = field(default="", metadata={  # overrides the spec's
        "help": "Configuration the per-class gains are measured against. Default: the spec's, else the first "
                "linear one."})
    groups: str = field(default="", metadata={  # groups JSON for non-AVA label maps
        "help": "Class groups JSON {\"group\": [ids]} for non-AVA label maps. Default: AVA groups / the store's."})
    executor: str = field(default=IN_PROCESS, metadata={
        "help": "process: runs on this machine (--jobs at once); local: one submitit job per run on this machine; "
                "slurm: one Slurm job per run, all in one job array (the sweep waits for them).",
        "metavar": "process|local|slurm"})
    jobs: int = field(default=1, metadata={
        "help": "Runs trained at once with --executor process (a process pool); raise it on a GPU with room."})
    top_k: int = field(default=20, metadata={"help": "Classes per per-class gain plot (largest absolute gains)."})
    progress: bool = field(default=True, metadata={"help": "Hide progress bars.", "off": "--no-progress"})
    command_line: str = field(default="", metadata={"no_option": "the command line itself, set by the command"})

    def __post_init__(self):
        self.train = dict(self.train) | {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "device")
                                         if getattr(self, k) is not None}
        given = sum(bool(x) for x in (self.preset, self.spec_file, self.heads))
        if given != 1:
            raise ValueError("give exactly one of --preset, --spec or --head")
        for p in (self.train_store, self.val_store):
            if not p:
                raise ValueError("--train-store and --val-store are required")
        if not self.out:
            raise ValueError("--out is required")
        self.check_executor(self.executor, IN_PROCESS)
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.jobs != 1 and self.executor != IN_PROCESS:
            raise LaunchError(f"--jobs is for --executor {IN_PROCESS} (--executor {self.executor}: one job per run)")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.groups and not Path(self.groups).is_file():
            raise ValueError(f"groups file {self.groups} not found")
        check_train_dict(self.train, "--train-arg")
        bad = [h for h in self.heads if h not in HEADS]
        if bad:
            raise ValueError(f"unknown head(s) {bad}; valid heads: {', '.join(sorted(HEADS))}")


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
            except Exception as e:  # a bad switch for this head: report it on the row, keep sweeping
                need, reason = frozenset(), f"skipped: cannot build the head ({type(e).__name__}: {e})"
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
