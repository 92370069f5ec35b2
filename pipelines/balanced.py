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
of a head (IGMN) are not used, since they do not train the classifier. The epoch loop is a small
dedicated loop over the classifier's parameters (train.train's loop also schedules LR / early
stops / resumes the whole head); data, loss, evaluation and file writing are train.py's own.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pipelines import losses
from pipelines.train import (TrainArgs, _atomic_save, batch_loss, eval_groups, evaluate_head, gt_for_eval, load_split,
                             load_trained, resolve_device, seed_everything, write_predictions_csv)

DEFAULT_EPOCHS = 5  # the report gives no number


def classifier_parameters(head: nn.Module) -> list[nn.Parameter]:
    """The final classifier's parameters: head.classifier_parameters() when the head defines it,
    else the parameters of its submodule `classifier`."""
    if hasattr(head, "classifier_parameters"):
        params = list(head.classifier_parameters())
    elif isinstance(getattr(head, "classifier", None), nn.Module):
        params = list(head.classifier.parameters())
    else:
        raise ValueError(f"{type(head).__name__} has neither classifier_parameters() nor a submodule named "
                         "'classifier'; class-balanced retraining needs to know its final classifier")
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
    out = Path(out_dir) if out_dir else run / "balanced"
    if (out / "last.pt").exists():
        raise FileExistsError(f"{out} already holds a retrained classifier; remove it or choose another out_dir")
    dev = resolve_device(device)
    head, cfg = load_trained(run, dev, checkpoint)
    params = classifier_parameters(head)
    for p in head.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)

    names = {f.name for f in dataclasses.fields(TrainArgs)}
    args = TrainArgs(**({k: v for k, v in cfg.items() if k in names}
                        | {"out_dir": str(out), "resume": False, "progress": progress}))
    seed = args.seed if seed is None else int(seed)
    lr = float(cfg["lr"] if lr is None else lr)
    seed_everything(seed)
    levels, radius = cfg["levels"], float(cfg["temporal_radius"])
    n_obj = cfg.get("num_object_classes", 0)
    _, _, train_g = load_split(args.train_store, args, args.train_boxes, args.train_score_threshold, levels, dev, n_obj)
    val_store, val_tables, val_g = load_split(args.val_store, args, args.val_boxes, args.val_score_threshold,
                                              levels, dev, n_obj)
    label_ids, eval_ids = cfg["label_ids"], cfg["eval_label_ids"]
    pose_cols = losses.pose_columns(label_ids, args.pose_ids)
    gt = gt_for_eval(val_tables, label_ids)
    groups = eval_groups(val_store, label_ids)
    loss_fn = losses.get_loss(args.loss)

    queries = train_g.query_keyframes()
    weights = balanced_keyframe_weights(train_g.actor_labels, train_g.actor_kf(), queries)
    labels = train_g.actor_labels
    opt = torch.optim.Adam(params, lr=lr)
    out.mkdir(parents=True, exist_ok=True)
    config = cfg | {"retrain_classifier": "balanced", "retrain_epochs": int(epochs), "retrain_lr": lr,
                    "retrain_seed": seed, "source_run": str(run), "source_checkpoint": checkpoint,
                    "out_dir": str(out)}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "metrics.jsonl").write_text("")
    best_map, best_epoch = -math.inf, -1
    for epoch in range(epochs):
        head.eval()  # frozen representation in inference mode; see the module docstring
        order = sample_keyframes(queries, weights, torch.Generator().manual_seed(seed * 1000 + epoch))
        t0, total_loss, steps = time.perf_counter(), 0.0, 0
        for start in tqdm(range(0, len(order), args.batch_size), desc=f"balanced {epoch + 1}/{epochs}",
                          disable=not progress, unit="batch"):
            loss = batch_loss(head, train_g, labels, order[start : start + args.batch_size], radius, dev, args.amp,
                              loss_fn, pose_cols, aux=False, where=f"balanced epoch {epoch + 1}, step {steps}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item()
            steps += 1
        result, det = evaluate_head(head, val_g, val_tables, gt, args, radius, dev, label_ids, pose_cols, eval_ids)
        record = {"epoch": epoch + 1, "train_loss": total_loss / max(steps, 1), "val_map": result.map, "lr": lr,
                  "train_seconds": time.perf_counter() - t0}
        print(f"balanced epoch {epoch + 1}: loss {record['train_loss']:.4f}  val mAP {result.map * 100:.2f}",
              file=sys.stderr)
        if result.map > best_map:
            best_map, best_epoch = result.map, epoch + 1
            _atomic_save({"model": head.state_dict(), "config": config, "epoch": epoch + 1}, out / "best.pt")
            write_predictions_csv(out / "val_predictions.csv", det, val_tables)
            (out / "per_class_ap.json").write_text(json.dumps(result.to_json(groups), indent=2))
        _atomic_save({"model": head.state_dict(), "optimizer": opt.state_dict(), "config": config,
                      "epoch": epoch + 1}, out / "last.pt")
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    summary = {"best_val_map": best_map, "best_epoch": best_epoch, "epochs": epochs, "run_dir": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
