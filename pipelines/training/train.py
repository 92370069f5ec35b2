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
import time
from dataclasses import asdict

import torch

from stagecache.heads import build_head
from stagecache.pipelines.training import losses
from stagecache.pipelines.training.head_args import HeadArgError, check_head_kwargs
from stagecache.pipelines.training.run_dir import RunDir, check_new_run
from stagecache.pipelines.training.run_info import environment, start_line
from stagecache.pipelines.training.run_eval import (EvalContext, default_eval_ids, eval_groups, evaluate_head,
                                                   gt_for_eval, is_tube_store, tube_metric_note, tube_target)
from stagecache.pipelines.training.split import SplitSpec, TrainingStores, check_training_stores
from stagecache.pipelines.training.steps import LossContext, SplitContext, make_optimizer, resolve_device, seed_everything, train_epoch
from stagecache.pipelines.training.train_args import TrainArgs  # also imported from here (its module imports no torch)
from stagecache.pipelines.training.val_exclusions import val_exclusions


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

    stores = check_training_stores(SplitSpec(args.train_store, "train", args.train_boxes, args.train_score_threshold),
                                   SplitSpec(args.val_store, "val", args.val_boxes, args.val_score_threshold),
                                   build=build, backbones=args.backbones, combine=args.combine,
                                   bank_group=args.bank_group)
    losses.check_pose_ids(args.loss, args.pose_ids, stores.label_ids, args.train_store)
    return stores


def train(args: TrainArgs) -> dict:
    out = RunDir(args.out_dir, tensorboard=args.tensorboard, name=args.head)  # console lines also in train.log
    device = resolve_device(args.device)
    seed_everything(args.seed)  # first: the head's initial weights are the seed's
    # Stores, levels, dims, labels: fail in seconds, before any write; then both splits load (NaN/Inf
    # found there, still before any write). The head is built once, at the stores' dims; what it
    # declares decides what is checked and loaded.
    stores = preflight_train(args)
    head, radius = stores.head.to(device), float(stores.head.temporal_radius)
    train_data, val_data = stores.load(device, memory_budget=args.memory_budget, split_source=args.split_source,
                                       say=out.say)
    label_ids = stores.label_ids
    eval_ids = [i for i in (args.eval_label_ids or default_eval_ids(label_ids)) if i in label_ids]
    train_split = SplitContext.of(train_data, radius, device, args.amp)
    val_split = SplitContext.of(val_data, radius, device, args.amp)
    loss = LossContext(args.loss, losses.pose_columns(label_ids, args.pose_ids), cpu_bf16=args.cpu_bf16)
    tube_store = is_tube_store(val_data.store)
    tube = tube_target(val_data.store, val_data.tables, args.tube_gt) if args.tube_gt else None
    # The keyframes evaluate --excluded drops, from --excluded or the val store (val_exclusions.py).
    excluded = None if tube else val_exclusions(args.excluded, val_data.store, val_data.tables)
    ev = EvalContext(gt_for_eval(val_data.tables, label_ids), label_ids, eval_ids, args.max_dets_per_kf,
                     batch_size=max(args.batch_size, 64), tube=tube,
                     excluded_kf=excluded.keyframes if excluded else None)
    if note := tube_metric_note(tube, tube_store):
        out.say(f"note: {note}")
    groups = eval_groups(val_data.store, label_ids)

    # The dims the head was built with: the loaded object features are 0-d for a head that does not
    # read them.
    config = asdict(args) | {"lr": args.lr, "label_ids": label_ids, "eval_label_ids": eval_ids,
                             "label_names": [str(n) for n in stores.stores[0].attrs.get("label_names") or []],
                             "excluded": excluded.to_json() if excluded else None,
                             "environment": environment(device, args.amp, args.cpu_bf16),  # volatile on resume
                             "actor_dim": stores.actor_dim, "object_dim": stores.object_dim,
                             "temporal_radius": radius, "levels": stores.levels,
                             "num_object_classes": stores.num_object_classes}
    if args.sampling == "random" and train_split.feed.kind == "streamed":
        # Random batches of a streamed split depend on its chunk size (stream.py): a resume must match.
        config["train_stream_budget"] = train_split.feed.budget
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
        out.say(f"resuming {out.path} after epoch {state['epoch']}")
    out.start(config, state["history"], best_epoch=state["best_epoch"], best_ap=state.get("best_ap"),
              class_names=dict(zip(label_ids, val_data.store.attrs.get("label_names") or [])))
    out.say(start_line(config["environment"], train_data.graph, val_data.graph, head, stores.groups[0], args.bank_group))
    if excluded:
        e = excluded.to_json()
        out.say(f"val mAP leaves out {e['val_keyframes']} val keyframe(s), those of the {e['count']} excluded "
                f"timestamp(s) of {e['file'] or 'the val store'} ({'--excluded' if e['source'] == 'option' else 'recorded in the val store'})")

    train_queries = train_data.graph.query_keyframes().cpu()
    for epoch in range(state["epoch"], args.epochs):
        if state["bad_epochs"] >= args.early_stop:
            break
        # The batches are a function of (seed, epoch) only: a resumed run sees the same ones.
        # A streamed split under random sampling draws them within groups of videos (stream.py).
        batches = train_split.feed.epoch_batches(train_queries, args.batch_size, args.sampling, args.seed, epoch)
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
        out.say(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  val mAP {result.map * 100:.2f}"
                f"{'  (best)' if improved else ''}")
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
