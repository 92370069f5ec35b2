"""`train-head`: train one head on cached features.

The training loop is the one function `train`, meant to be read top to bottom; its pieces live
next door (split.py: the stores opened, checked and loaded, the loop's one source of data;
steps.py: a batch, a step, an epoch; run_eval.py: validation; run_dir.py: the files of a run;
predict.py: a trained run over a store).

The schedule is STAGE's (Sec. 4): Adam; LR divided by 10 when val mAP has not improved for
`lr_patience` (10) epochs; early stop after `early_stop` (5) epochs without improvement; an epoch
cap. Note that with the paper's numbers taken literally early stopping fires before the LR drop;
both are flags.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from stagecache.core.boxes import BOX_SETS, check_box_set
from stagecache.heads import HEADS, build_head
from stagecache.pipelines.training import losses
from stagecache.pipelines.training.head_args import HeadArgError, check_head_kwargs
from stagecache.pipelines.training.run_dir import RunDir, check_new_run
from stagecache.pipelines.training.run_eval import (EvalContext, default_eval_ids, eval_groups, evaluate_head,
                                                   gt_for_eval, is_tube_store, tube_metric_note, tube_target)
from stagecache.pipelines.training.split import SplitSpec, TrainingStores, check_training_stores
from stagecache.pipelines.training.split_batches import SAMPLINGS, epoch_batches
from stagecache.pipelines.training.steps import LossContext, SplitContext, make_optimizer, resolve_device, seed_everything, train_epoch

# Learning rates of the papers, for their reference features (SlowFast-like unless noted).
PAPER_LR: dict[str, float] = {
    "linear": 1e-3,  # our baseline; SlowFast's head is trained end-to-end, no paper value applies
    "stage": 1e-5,  # STAGE Sec. 4: 1e-5 for R101-I3D-NL / SlowFast-NL features (6.25e-5 for I3D)
}
DEFAULT_LR = 1e-4
# What train-head may do after training: "balanced" = pipelines/training/balanced.py.
RETRAIN_CLASSIFIER = ("none", "balanced")


@dataclass
class TrainArgs:
    """Arguments of `train-head`; each field's metadata is its CLI option (pipelines/commands/options.py)."""

    train_store: str = field(metadata={"help": "Feature store of the training split (path or fsspec URL)."})
    val_store: str = field(metadata={"help": "Feature store of the validation split."})
    head: str = field(default="stage", metadata={"help": "Head to train (heads.HEADS).", "choices": sorted(HEADS)})
    out_dir: str = field(default="", metadata={"help": "Run directory. Default: runs/<head>-<date-time>.",
                                               "option": "--out"})
    backbones: list[str] = field(default_factory=list, metadata={  # empty: the store's only backbone group
        "help": "Feature group(s) to use; give two to combine (STAGE Table 3). Default: the store's only one.",
        "option": "--backbone"})
    combine: str = field(default="mean", metadata={"help": "How two backbones are combined.",
                                                   "choices": ["mean", "concat"]})
    head_args: dict = field(default_factory=dict, metadata={  # the command types the pairs by the head
        "help": "Head keyword, repeatable, e.g. --head-arg num_layers=3 --head-arg proximity=false; typed by "
                "the head's signature (booleans: true/false/yes/no/1/0), unknown keys refused.",
        "option": "--head-arg"})
    epochs: int = field(default=20, metadata={"help": "Epoch cap (STAGE trains 20 epochs)."})
    batch_size: int = field(default=6, metadata={"help": "Query keyframes per step (STAGE: 6 clips)."})  # STAGE Sec. 4
    sampling: str = field(default="random", metadata={  # "blocks": faster, see README
        "help": "Batches of consecutive keyframes sharing context (official STAGE code) or random keyframes.",
        "choices": SAMPLINGS})
    lr: float | None = field(default=None, metadata={  # None: the paper's value for the head (PAPER_LR)
        "help": "Adam learning rate. Default: the head's paper value."})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay."})
    lr_patience: int = field(default=10, metadata={
        "help": "Divide the LR by 10 after this many epochs without val mAP gain."})
    early_stop: int = field(default=5, metadata={"help": "Stop after this many epochs without val mAP gain."})
    loss: str = field(default="bce", metadata={
        "help": "bce: sigmoid BCE (AVA); pose_softmax: softmax over pose classes + BCE; softmax: single-label.",
        "choices": list(losses.LOSSES)})
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

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; valid heads: {', '.join(sorted(HEADS))}")
        if self.loss not in losses.LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(losses.LOSSES)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; valid: {', '.join(SAMPLINGS)}")
        if self.combine not in ("mean", "concat"):
            raise ValueError(f"combine must be 'mean' or 'concat', got {self.combine!r}")
        for name in ("train_boxes", "val_boxes"):
            check_box_set(getattr(self, name), name)
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


def preflight_train(args: TrainArgs) -> TrainingStores:
    """Everything `train(args)` relies on, checked before it writes anything: the head's keywords,
    the run directory, both stores (`split.check_training_stores`), with the head built once at the
    stores' dims (build it after seeding, as train() does, and train that one)."""
    check_head_kwargs(args.head, args.head_args)
    check_new_run(args.out_dir, args.resume)

    def build(**dims):
        try:
            head = build_head(args.head, **dims, **args.head_args)
        except ValueError as e:
            raise HeadArgError(f"--head {args.head}: {e}") from None
        if args.bank_group and not head.bank:  # declared by the head (heads/protocol.py)
            raise HeadArgError(f"--bank-group {args.bank_group} needs a head built with a bank "
                               f"(e.g. --head acar --head-arg bank=true)")
        if head.bank and not args.bank_group:
            raise HeadArgError(f"head {args.head} with bank=true needs --bank-group (the group written by write-bank)")
        return head

    return check_training_stores(SplitSpec(args.train_store, "train", args.train_boxes, args.train_score_threshold),
                                 SplitSpec(args.val_store, "val", args.val_boxes, args.val_score_threshold),
                                 build=build, backbones=args.backbones, combine=args.combine,
                                 bank_group=args.bank_group)


def train(args: TrainArgs) -> dict:
    out = RunDir(args.out_dir, tensorboard=args.tensorboard)
    device = resolve_device(args.device)
    seed_everything(args.seed)  # first: the head's initial weights are the seed's
    # Stores, levels, dims, labels: fail in seconds, before any write; then both splits load (NaN/Inf
    # found there, still before any write). The head is built once, at the stores' dims; what it
    # declares decides what is checked and loaded.
    stores = preflight_train(args)
    head, radius = stores.head.to(device), float(stores.head.temporal_radius)
    train_data, val_data = stores.load(device)
    label_ids = stores.label_ids
    eval_ids = [i for i in (args.eval_label_ids or default_eval_ids(label_ids)) if i in label_ids]
    train_split = SplitContext(train_data.graph, radius, device, args.amp, train_data.tables)
    val_split = SplitContext(val_data.graph, radius, device, args.amp, val_data.tables)
    loss = LossContext(args.loss, losses.pose_columns(label_ids, args.pose_ids), cpu_bf16=args.cpu_bf16)
    tube_store = is_tube_store(val_data.store)
    tube = tube_target(val_data.store, val_data.tables, args.tube_gt) if args.tube_gt else None
    ev = EvalContext(gt_for_eval(val_data.tables, label_ids), label_ids, eval_ids, args.max_dets_per_kf,
                     batch_size=max(args.batch_size, 64), tube=tube)
    if note := tube_metric_note(tube, tube_store):
        print(f"note: {note}", file=sys.stderr)
    groups = eval_groups(val_data.store, label_ids)

    # The dims the head was built with: the loaded object features are 0-d for a head that does not
    # read them.
    config = asdict(args) | {"lr": args.lr, "label_ids": label_ids, "eval_label_ids": eval_ids,
                             "actor_dim": stores.actor_dim, "object_dim": stores.object_dim,
                             "temporal_radius": radius, "levels": stores.levels,
                             "num_object_classes": stores.num_object_classes}
    resuming = args.resume and out.last.exists()
    if resuming:  # before any state is loaded: a changed head would not even load
        out.check_resume(config)
    if args.init_from and not resuming:  # a resumed run has its own weights
        from stagecache.pipelines.training.init_from import init_head_from

        init_head_from(head, args.init_from, label_ids)
    opt = make_optimizer(head.parameters(), args.lr, args.weight_decay, device)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=args.lr_patience)
    state = {"epoch": 0, "best_map": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    if resuming:
        ckpt = out.load_last(device)
        head.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        print(f"resuming {out.path} after epoch {state['epoch']}", file=sys.stderr)
    out.start(config, state["history"], best_epoch=state["best_epoch"], best_ap=state.get("best_ap"),
              class_names=dict(zip(label_ids, val_data.store.attrs.get("label_names") or [])))

    train_queries = train_data.graph.query_keyframes().cpu()
    for epoch in range(state["epoch"], args.epochs):
        if state["bad_epochs"] >= args.early_stop:
            break
        # The batches are a function of (seed, epoch) only: a resumed run sees the same ones.
        batches = epoch_batches(train_queries, args.batch_size, args.sampling, args.seed, epoch)
        t0 = time.perf_counter()
        # Raises on a non-finite loss, checked every 20 steps so the host rarely waits on the device.
        stats = train_epoch(head, opt, train_split, loss, batches, desc=f"epoch {epoch + 1}/{args.epochs}",
                            progress=args.progress)
        train_time = time.perf_counter() - t0

        t0 = time.perf_counter()
        result, det = evaluate_head(head, val_split, loss, ev)
        val_time = time.perf_counter() - t0
        sched.step(result.map)  # the LR drops after lr_patience epochs without a better val mAP
        improved = result.map > state["best_map"]
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        record = {"epoch": epoch + 1, "train_loss": stats["train_loss"], "val_map": result.map,
                  "lr": opt.param_groups[0]["lr"], "train_keyframes_per_s": stats["seen"] / max(train_time, 1e-9),
                  "train_seconds": train_time, "data_seconds": stats["data_seconds"],
                  "step_seconds": stats["step_seconds"], "val_seconds": val_time}
        state["history"].append(record)
        state["epoch"] = epoch + 1
        print(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  val mAP {result.map * 100:.2f}"
              f"{'  (best)' if improved else ''}", file=sys.stderr)
        if improved:
            state["best_map"], state["best_epoch"] = result.map, epoch + 1
            state["best_ap"] = {int(k): float(v) for k, v in result.per_class.items()}  # re-logged on resume
            out.save_best(head.state_dict(), config, epoch + 1, result, det, val_data.tables, groups)
        # last.pt is the epoch's commit point: a run killed before it redoes this epoch, identically.
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        out.end_epoch({"model": head.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                       "state": state, "rng": rng, "config": config}, record)

    return out.finish({"best_val_map": state["best_map"], "best_epoch": state["best_epoch"],
                       "epochs": state["epoch"], "run_dir": str(out.path),
                       **({"val_metric": tube_metric_note(tube, tube_store)} if tube_store or tube else {})})
