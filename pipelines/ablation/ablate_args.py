"""`AblateArgs`, the arguments of `ablate` (the sweep: pipelines/ablation/sweep.py, which re-exports
them), in a module that imports no torch, so that `ablate --help` answers at once; each field's
metadata is its CLI option (pipelines/commands/options.py), the cluster options `ClusterArgs`'."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stagecache.core.registry_names import HEAD_NAMES
from stagecache.pipelines.ablation.spec import check_train_dict, parse_grid, parse_pairs, presets
from stagecache.pipelines.launch.executors import ClusterArgs, LaunchError

IN_PROCESS = "process"  # --executor: a process pool on this machine (pipelines/ablation/jobs.py)


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
        if self.groups:  # read now: a bad file would otherwise fail the report after every run
            from stagecache.pipelines.evaluation.ava_inputs import read_groups_file

            read_groups_file(self.groups)
        check_train_dict(self.train, "--train-arg")
        bad = [h for h in self.heads if h not in HEAD_NAMES]
        if bad:
            raise ValueError(f"unknown head(s) {bad}; valid heads: {', '.join(sorted(HEAD_NAMES))}")
