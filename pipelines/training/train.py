"""`train-head`: train one head on cached features.

The training loop is the one function `train`, meant to be read top to bottom; its pieces live
next door (steps.py: a batch, a step, an epoch; run_eval.py: validation; split_load.py: a store
as a split; run_dir.py: the files of a run; predict.py: a trained run over a store).

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

from stagecache.core.boxes import check_box_set
from stagecache.heads import HEADS
from stagecache.pipelines.training import losses
from stagecache.pipelines.training.preflight import preflight_train
from stagecache.pipelines.training.run_dir import RunDir
from stagecache.pipelines.training.run_eval import EvalContext, default_eval_ids, eval_groups, evaluate_head, gt_for_eval
from stagecache.pipelines.training.split_batches import SAMPLINGS, epoch_batches
from stagecache.pipelines.training.split_load import (backbone_groups, feature_dims, head_levels, load_split, object_class_count,
                                  reads_objects, store_label_ids)
from stagecache.pipelines.training.steps import LossContext, SplitContext, make_optimizer, resolve_device, seed_everything, train_epoch

# Learning rates of the papers, for their reference features (SlowFast-like unless noted).
PAPER_LR: dict[str, float] = {
    "linear": 1e-3,  # our baseline; SlowFast's head is trained end-to-end, no paper value applies
    "stage": 1e-5,  # STAGE Sec. 4: 1e-5 for R101-I3D-NL / SlowFast-NL features (6.25e-5 for I3D)
}
DEFAULT_LR = 1e-4


@dataclass
class TrainArgs:
    train_store: str
    val_store: str
    head: str = "stage"
    out_dir: str = ""
    backbones: list[str] = field(default_factory=list)  # empty: the store's only backbone group
    combine: str = "mean"
    head_args: dict = field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 6  # STAGE Sec. 4: batches of 6 clips
    sampling: str = "random"  # independent keyframes, or "blocks" of consecutive ones (official STAGE code; faster, see README)
    lr: float | None = None  # None: the paper's value for the head (PAPER_LR)
    weight_decay: float = 0.0
    lr_patience: int = 10
    early_stop: int = 5
    loss: str = "bce"
    pose_ids: list[int] = field(default_factory=list)  # pose classes for loss=pose_softmax
    train_boxes: str = "gt"
    train_score_threshold: float = 0.9
    val_boxes: str = "proposals"
    val_score_threshold: float = 0.8
    eval_label_ids: list[int] = field(default_factory=list)  # empty: every class of the store
    max_dets_per_kf: int | None = 50
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    cpu_bf16: bool = False  # bfloat16 autocast when training on CPU (fast with AMX; off: CPU runs stay float32)
    resume: bool = False
    progress: bool = True
    command_line: str = ""
    bank_group: str = ""  # derived store group whose actor_maps feed a bank head (ACAR's ACFB, pipelines/training/acfb.py)
    init_from: str | None = None  # starting weights: an official STAGE or a train-head checkpoint (pipelines/training/init_from.py)

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


def train(args: TrainArgs) -> dict:
    out = RunDir(args.out_dir)
    device = resolve_device(args.device)
    seed_everything(args.seed)  # first: the head's initial weights are the seed's
    # Stores, levels, dims, labels: fail in seconds, before any write (NaN/Inf: as the splits load,
    # still before any write). The head is built there, once, at the stores' dims; what it declares
    # decides what is loaded.
    head = preflight_train(args).to(device)
    levels, radius = head_levels(head), float(head.temporal_radius)
    n_obj_cls = object_class_count(args.train_store, args.val_store)
    how = dict(levels=levels, device=device, backbones=args.backbones, combine=args.combine,
               bank_group=args.bank_group, num_object_classes=n_obj_cls, objects=reads_objects(head))
    train_store, train_tables, train_g = load_split(
        args.train_store, boxes=args.train_boxes, score_threshold=args.train_score_threshold, role="train", **how)
    val_store, val_tables, val_g = load_split(
        args.val_store, boxes=args.val_boxes, score_threshold=args.val_score_threshold, role="val", **how)
    label_ids = store_label_ids(train_store)  # equal label maps and a non-empty selection: preflight_train
    eval_ids = [i for i in (args.eval_label_ids or default_eval_ids(label_ids)) if i in label_ids]
    train_split = SplitContext(train_g, radius, device, args.amp, train_tables)
    val_split = SplitContext(val_g, radius, device, args.amp, val_tables)
    loss = LossContext(args.loss, losses.pose_columns(label_ids, args.pose_ids), cpu_bf16=args.cpu_bf16)
    ev = EvalContext(gt_for_eval(val_tables, label_ids), label_ids, eval_ids, args.max_dets_per_kf,
                     batch_size=max(args.batch_size, 64))
    groups = eval_groups(val_store, label_ids)

    # The dims the head was built with (preflight): the loaded object features are 0-d for a head
    # that does not read them.
    actor_dim, object_dim = feature_dims(train_store, backbone_groups(train_store, args.backbones), args.combine, n_obj_cls)
    config = asdict(args) | {"lr": args.lr, "label_ids": label_ids, "eval_label_ids": eval_ids,
                             "actor_dim": actor_dim, "object_dim": object_dim,
                             "temporal_radius": radius, "levels": levels,
                             "num_object_classes": n_obj_cls}
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
    out.start(config, state["history"])

    train_queries = train_g.query_keyframes().cpu()
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
            out.save_best(head.state_dict(), config, epoch + 1, result, det, val_tables, groups)
        # last.pt is the epoch's commit point: a run killed before it redoes this epoch, identically.
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        out.end_epoch({"model": head.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                       "state": state, "rng": rng, "config": config}, record)

    return out.finish({"best_val_map": state["best_map"], "best_epoch": state["best_epoch"],
                       "epochs": state["epoch"], "run_dir": str(out.path)})
