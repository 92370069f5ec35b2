"""Decoupled class-balanced classifier retraining (AVA-Kinetics 2021 report, Feng et al., Sec. 2.4,
after Kang et al., "Decoupling representation and classifier", cRT).

Stage one is an ordinary `train-head` run. Stage two (`retrain_classifier_balanced`) freezes
every parameter but the final classifier's and retrains it with class-balanced sampling of query
keyframes, writing a separate run directory `<run>/balanced/` with the same files as train-head
(config.json, metrics.jsonl, last.pt, best.pt, val_predictions.csv, per_class_ap.json,
summary.json), so `predict --run <run>/balanced` works unchanged.

Class-balanced sampling, keyframe level (AVA is multi-label, and heads see whole keyframes): a
query keyframe is drawn with probability proportional to the mean, over the (actor, label) pairs
of its selected actors, of 1 / (number of training actors carrying that label). Keyframes whose
actors have no label get the weight of the most frequent class. Each epoch draws as many
keyframes as the split has, with replacement, from a generator seeded with (seed, epoch).

Choices the report does not fix (documented defaults): 5 epochs; Adam at the run's own LR; the
frozen part runs in eval mode (no dropout, fixed normalisation statistics) so the representation
the classifier is fitted on is the one used at test time, and no buffer changes; auxiliary losses
of a head (IGMN) are not used, since they do not train the classifier. Each epoch is train-head's
own `steps.train_epoch` over the classifier's parameters (without train()'s LR schedule, early
stop and resume); loading, evaluation and the run directory are train-head's too.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from stagecache.heads import Head
from stagecache.pipelines.training import losses
from stagecache.pipelines.training.run_dir import RunDir, RunExistsError, load_trained
from stagecache.pipelines.training.split import SplitSpec, open_run_splits
from stagecache.pipelines.training.run_eval import EvalContext, eval_groups, evaluate_head, gt_for_eval
from stagecache.pipelines.training.val_exclusions import val_exclusions
from stagecache.pipelines.training.steps import LossContext, SplitContext, resolve_device, seed_everything, train_epoch

DEFAULT_EPOCHS = 5  # the report gives no number


def classifier_parameters(head: Head) -> list[nn.Parameter]:
    """The final classifier's parameters, as the head declares them (heads.Head.classifier_parameters;
    HeadBase's default: the parameters of its submodule `classifier`)."""
    params = list(head.classifier_parameters())  # every head of heads.HEADS declares it (heads.Head)
    if not params:
        raise ValueError(f"{type(head).__name__}: the classifier has no parameters to retrain")
    return params


def balanced_keyframe_weights(labels: Tensor, actor_kf: Tensor, queries: Tensor) -> Tensor:
    """(Q,) sampling weights of the query keyframes (see the module docstring).

    labels (A, L) multi-hot of the selected actors, actor_kf (A,) their keyframe, queries (Q,) keyframes."""
    lab = labels.float().cpu()
    kf = actor_kf.long().cpu()
    freq = lab.sum(0)  # (L,) actors per class
    inv = torch.where(freq > 0, 1.0 / freq.clamp(min=1), torch.zeros_like(freq))
    n_kf = int(max(int(kf.max()) + 1 if len(kf) else 0, int(queries.max()) + 1 if len(queries) else 0))
    total = torch.zeros(n_kf).index_add_(0, kf, lab @ inv)  # sum of 1/freq over (actor, label) pairs
    pairs = torch.zeros(n_kf).index_add_(0, kf, lab.sum(1))
    floor = 1.0 / float(freq.max()) if float(freq.max()) > 0 else 1.0
    w = torch.where(pairs > 0, total / pairs.clamp(min=1), torch.full_like(total, floor))
    return w[queries.long().cpu()]


def sample_keyframes(queries: Tensor, weights: Tensor, generator: torch.Generator) -> Tensor:
    """len(queries) keyframes drawn with replacement, probability proportional to weights."""
    idx = torch.multinomial(weights.double(), len(queries), replacement=True, generator=generator)
    return queries[idx.to(queries.device)]


def retrain_classifier_balanced(run_dir: str | Path, *, epochs: int = DEFAULT_EPOCHS, lr: float | None = None,
                                checkpoint: str = "best.pt", out_dir: str | Path | None = None,
                                device: str = "auto", seed: int | None = None, progress: bool = False) -> dict:
    """Retrain the classifier of a finished run with class-balanced sampling into `<run>/balanced/`.

    Returns {"best_val_map", "best_epoch", "epochs", "run_dir"} like train()."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    run = Path(run_dir)
    out_path = Path(out_dir) if out_dir else run / "balanced"
    if (out_path / "last.pt").exists():
        raise RunExistsError(f"{out_path} already holds a retrained classifier; remove it or choose another out_dir")
    dev = resolve_device(device)
    head, cfg = load_trained(run, dev, checkpoint)
    out = RunDir(out_path, tensorboard=cfg.get("tensorboard", True))  # as the run it retrains
    params = classifier_parameters(head)
    for p in head.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)

    seed = cfg["seed"] if seed is None else int(seed)
    lr = float(cfg["lr"] if lr is None else lr)
    seed_everything(seed)
    radius = float(cfg["temporal_radius"])
    train_data, val_data = open_run_splits(
        run, cfg, head, [SplitSpec(cfg["train_store"], "train", cfg["train_boxes"], cfg["train_score_threshold"]),
                         SplitSpec(cfg["val_store"], "val", cfg["val_boxes"], cfg["val_score_threshold"])], dev,
        memory_budget=cfg.get("memory_budget", ""), split_source=cfg.get("split_source", "auto"))
    train_g = train_data.graph  # labels and keyframes of every actor: the sampling weights
    val_store, val_tables = val_data.store, val_data.tables
    label_ids, eval_ids = cfg["label_ids"], cfg["eval_label_ids"]
    train_split = SplitContext.of(train_data, radius, dev, cfg["amp"])  # resident or streamed (sources.py)
    val_split = SplitContext.of(val_data, radius, dev, cfg["amp"])
    loss = LossContext(cfg["loss"], losses.pose_columns(label_ids, cfg["pose_ids"]), aux=False)
    # Scored without the keyframes the run it retrains left out (its config's `excluded`), as that run was.
    exc = cfg.get("excluded")
    excluded = val_exclusions(exc["file"] if exc["source"] == "option" else None, val_store, val_tables) if exc else None
    ev = EvalContext(gt_for_eval(val_tables, label_ids), label_ids, eval_ids, cfg["max_dets_per_kf"],
                     batch_size=max(cfg["batch_size"], 64), excluded_kf=excluded.keyframes if excluded else None)
    groups = eval_groups(val_store, label_ids)

    queries = train_g.query_keyframes()
    weights = balanced_keyframe_weights(train_g.actor_labels, train_g.actor_kf(), queries)
    opt = torch.optim.Adam(params, lr=lr)
    config = cfg | {"retrain_classifier": "balanced", "retrain_epochs": int(epochs), "retrain_lr": lr,
                    "retrain_seed": seed, "source_run": str(run), "source_checkpoint": checkpoint,
                    "out_dir": str(out.path)}
    out.start(config, [])
    best_map, best_epoch = -math.inf, -1
    for epoch in range(epochs):
        order = sample_keyframes(queries, weights, torch.Generator().manual_seed(seed * 1000 + epoch))
        t0 = time.perf_counter()
        # train_mode=False: the frozen representation stays in inference mode (module docstring).
        stats = train_epoch(head, opt, train_split, loss, list(order.split(cfg["batch_size"])),
                            desc=f"balanced {epoch + 1}/{epochs}", progress=progress, train_mode=False)
        result, det = evaluate_head(head, val_split, loss, ev)
        record = {"epoch": epoch + 1, "train_loss": stats["train_loss"], "val_map": result.map, "lr": lr,
                  "train_seconds": time.perf_counter() - t0}
        print(f"balanced epoch {epoch + 1}: loss {record['train_loss']:.4f}  val mAP {result.map * 100:.2f}",
              file=sys.stderr)
        if result.map > best_map:
            best_map, best_epoch = result.map, epoch + 1
            out.save_best(head.state_dict(), config, epoch + 1, result, det, val_tables, groups)
        out.end_epoch({"model": head.state_dict(), "optimizer": opt.state_dict(), "config": config,
                       "epoch": epoch + 1}, record)
    return out.finish({"best_val_map": best_map, "best_epoch": best_epoch, "epochs": epochs,
                       "run_dir": str(out.path)})
