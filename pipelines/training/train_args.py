"""`TrainArgs`, the arguments of `train-head` (the loop: pipelines/training/train.py, which re-exports
them), in a module that imports no torch, so that `train-head --help` answers at once; each field's
metadata is its CLI option (pipelines/commands/options.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from stagecache.core.boxes import BOX_SETS, check_box_set
from stagecache.core.registry_names import HEAD_NAMES, LOSS_NAMES, SAMPLING_NAMES, SOURCE_NAMES

# Learning rates of the papers, for their reference features (SlowFast-like unless noted).
PAPER_LR: dict[str, float] = {
    "linear": 1e-3,  # our baseline; SlowFast's head is trained end-to-end, no paper value applies
    "stage": 1e-5,  # STAGE Sec. 4: 1e-5 for R101-I3D-NL / SlowFast-NL features (6.25e-5 for I3D)
}
DEFAULT_LR = 1e-4
# What train-head may do after training: "balanced" = pipelines/training/balanced.py.
RETRAIN_CLASSIFIER = ("none", "balanced")


def memory_budget_field():
    """`--memory-budget` of every command that reads a split (train-head, predict, write-bank)."""
    return field(default="", metadata={  # pipelines/training/sources.py
        "help": "Memory the splits may take, e.g. 4G or 512M; a split that does not fit is streamed from the "
                "store. Default: 60% of the available memory (MemAvailable, the memory cgroup's headroom)."})


def split_source_field():
    """`--split-source`, beside `--memory-budget`."""
    return field(default="auto", metadata={  # pipelines/training/sources.py, stream.py
        "help": "Hold each split in memory (resident), read it from the store in chunks within the budget "
                "(streamed), or choose by its size for the head (auto).", "choices": list(SOURCE_NAMES)})


def check_split_reading(memory_budget: str, split_source: str) -> None:
    """The two options above, validated (ValueError: one line)."""
    from stagecache.pipelines.training.sources import SOURCES, parse_size  # torch: not at --help time

    if split_source not in SOURCES:
        raise ValueError(f"unknown split_source {split_source!r}; valid: {', '.join(SOURCES)}")
    if memory_budget:
        parse_size(memory_budget)


@dataclass
class TrainArgs:
    """Arguments of `train-head`; each field's metadata is its CLI option (pipelines/commands/options.py)."""

    train_store: str = field(metadata={"help": "Feature store of the training split (path or fsspec URL)."})
    val_store: str = field(metadata={"help": "Feature store of the validation split."})
    head: str = field(default="stage", metadata={"help": "Head to train (heads.HEADS).", "choices": sorted(HEAD_NAMES)})
    out_dir: str = field(default="", metadata={"help": "Run directory. Default: runs/<head>-<date-time>.",
                                               "option": "--out"})
    backbones: list[str] = field(default_factory=list, metadata={  # empty: the store's only backbone group
        "help": "Feature group(s) to use; give two to combine (STAGE Table 3). Default: the store's only one.",
        "option": "--backbone"})
    combine: str = field(default="mean", metadata={"help": "How two backbones are combined.",
                                                   "choices": ["mean", "concat"]})
    layer: int | None = field(default=None, metadata={  # extract features --layers: group <backbone>.l<N>
        "help": "Train on encoder block N of each --backbone (the groups <backbone>.l<N> that extract features "
                "--layers wrote).", "range": {"min": 1}})
    head_args: dict = field(default_factory=dict, metadata={  # the command types the pairs by the head
        "help": "Head keyword, repeatable, e.g. --head-arg num_layers=3 --head-arg proximity=false; typed by "
                "the head's signature (booleans: true/false/yes/no/1/0), unknown keys refused.",
        "option": "--head-arg"})
    epochs: int = field(default=20, metadata={"help": "Epoch cap (STAGE trains 20 epochs)."})
    batch_size: int = field(default=6, metadata={"help": "Query keyframes per step (STAGE: 6 clips)."})  # STAGE Sec. 4
    sampling: str = field(default="random", metadata={  # "blocks": faster, see README
        "help": "Batches of consecutive keyframes sharing context (official STAGE code) or random keyframes.",
        "choices": SAMPLING_NAMES})
    lr: float | None = field(default=None, metadata={  # None: the paper's value for the head (PAPER_LR)
        "help": "Adam learning rate. Default: the head's paper value."})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay."})
    lr_patience: int = field(default=10, metadata={
        "help": "Divide the LR by 10 after this many epochs without val mAP gain."})
    early_stop: int = field(default=5, metadata={"help": "Stop after this many epochs without val mAP gain."})
    loss: str = field(default="bce", metadata={
        "help": "bce: sigmoid BCE (AVA); pose_softmax: softmax over pose classes + BCE; softmax: single-label.",
        "choices": list(LOSS_NAMES)})
    pose_ids: list[int] = field(default_factory=list, metadata={
        "help": "Comma-separated pose class ids for --loss pose_softmax (AVA: 1-14).", "sep": ","})
    train_boxes: str = field(default="gt", metadata={"help": "Actor boxes to train on.", "choices": BOX_SETS})
    train_score_threshold: float = field(default=0.9, metadata={
        "help": "Minimum proposal score for training (SlowFast convention)."})
    val_boxes: str = field(default="proposals", metadata={"help": "Actor boxes to predict on for validation.",
                                                          "choices": BOX_SETS})
    val_score_threshold: float = field(default=0.8, metadata={
        "help": "Minimum proposal score for validation (SlowFast/STAGE: 0.8)."})
    eval_label_ids: list[int] = field(default_factory=list, metadata={  # empty: every class of the store
        "help": "Comma-separated class ids to evaluate. Default: every class of the store.", "option": "--eval-ids",
        "sep": ","})
    max_dets_per_kf: int | None = field(default=50, metadata={
        "help": "Keep every detection per keyframe (PySlowFast) instead of the official top 50.", "off": "--no-cap"})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    amp: bool = field(default=True, metadata={"help": "Disable autocast on GPU.", "off": "--no-amp"})
    cpu_bf16: bool = field(default=False, metadata={  # off: CPU runs stay float32
        "help": "bfloat16 autocast when training on CPU (fast on CPUs with AMX)."})
    resume: bool = field(default=False, metadata={"help": "Continue the run in --out from its last checkpoint."})
    progress: bool = field(default=True, metadata={"help": "Hide progress bars.", "off": "--no-progress"})
    command_line: str = field(default="", metadata={"no_option": "the command line itself, set by the command"})
    tensorboard: bool = field(default=True, metadata={  # pipelines/training/tensorboard.py
        "help": "Write no TensorBoard event files (default: the run directory holds them, equal to metrics.jsonl).",
        "off": "--no-tensorboard"})
    bank_group: str = field(default="", metadata={  # ACAR's ACFB (pipelines/training/acfb.py)
        "help": "Store group of first-order relation maps (written by write-bank) fed to a bank head, "
                "e.g. --head acar --head-arg bank=true --bank-group acfb (ACAR-Net ACFB). Default: no bank."})
    tube_gt: str | None = field(default=None, metadata={  # pipelines/training/run_eval.py TubeTarget
        "help": "jhmdb/ucf24: the GT pickle of the val store; the val mAP (best.pt, per_class_ap.json) is then "
                "evaluate --dataset's frame-mAP (protocol moc) of val_predictions.csv. Default: AVA frame-mAP on "
                "the store's GT rows (the run says so).", "path": {"exists": True, "dir_okay": False}})
    excluded: str | None = field(default=None, metadata={  # pipelines/training/val_exclusions.py
        "help": "AVA excluded-timestamps CSV: the val mAP (best.pt, per_class_ap.json) is scored without these "
                "keyframes, as evaluate --excluded. Default: those the val store recorded at extraction, if any.",
        "path": {"exists": True, "dir_okay": False}})
    init_from: str | None = field(default=None, metadata={  # pipelines/training/init_from.py
        "help": "Start from these weights: an official STAGE checkpoint (.pth; with --head stage --head-arg "
                "variant=official) or a train-head best.pt/last.pt. Default: random initialisation.",
        "path": {"exists": True, "dir_okay": False}})
    # What the command does after train(): not part of what a run computes (volatile for --resume
    # and ablate, which does not run it).
    retrain_classifier: str = field(default="none", metadata={
        "help": "After training, retrain only the final classifier with class-balanced keyframe sampling "
                "(AVA-Kinetics 2021 report, Sec. 2.4) into <out>/balanced/.", "choices": RETRAIN_CLASSIFIER})
    retrain_epochs: int = field(default=5, metadata={
        "help": "Epochs of the classifier retraining (the report gives none; 5 is our default)."})
    memory_budget: str = memory_budget_field()
    split_source: str = split_source_field()

    def __post_init__(self):
        # Imported here, not with the module: `train-head --help` must not load torch (issue 32).
        from stagecache.extract.vit.specs import layer_group
        from stagecache.heads import HEADS
        from stagecache.pipelines.training import losses
        from stagecache.pipelines.training.split_batches import SAMPLINGS

        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; valid heads: {', '.join(sorted(HEADS))}")
        if self.layer is not None:  # sugar: the run records the groups themselves
            if not self.backbones:
                raise ValueError("--layer N needs --backbone NAME (its block N is the group NAME.l<N>)")
            self.backbones = [layer_group(b, self.layer) for b in self.backbones]
            self.layer = None
        if self.loss not in losses.LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(losses.LOSSES)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; valid: {', '.join(SAMPLINGS)}")
        if self.combine not in ("mean", "concat"):
            raise ValueError(f"combine must be 'mean' or 'concat', got {self.combine!r}")
        for name in ("train_boxes", "val_boxes"):
            check_box_set(getattr(self, name), name)
        check_split_reading(self.memory_budget, self.split_source)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.out_dir:
            self.out_dir = str(Path("runs") / f"{self.head}-{time.strftime('%Y%m%d-%H%M%S')}")
        if self.lr is None:
            self.lr = PAPER_LR.get(self.head, DEFAULT_LR)
        if self.bank_group == "base":
            raise ValueError("bank_group cannot be 'base'; give the group written by write-bank (e.g. acfb)")
        if self.retrain_classifier not in RETRAIN_CLASSIFIER:
            raise ValueError(f"unknown retrain_classifier {self.retrain_classifier!r}; valid: {', '.join(RETRAIN_CLASSIFIER)}")
        if self.retrain_classifier != "none" and self.retrain_epochs < 1:
            raise ValueError("--retrain-epochs must be >= 1")
        if self.excluded and self.tube_gt:
            raise ValueError("--excluded applies to AVA frame-mAP; --tube-gt scores a tube dataset, which has none")
