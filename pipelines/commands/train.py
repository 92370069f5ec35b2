"""`train-head` and `predict`."""
from __future__ import annotations

import os
import shlex
import sys

import click

from stagecache.heads import HEADS
from stagecache.pipelines.commands.options import BOXES, dataclass_options
from stagecache.pipelines.training.preflight import parse_head_args, preflight_predict
from stagecache.pipelines.training.predict import PredictArgs


def _ids(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()] if text else []


@click.command(context_settings={"show_default": True})
@click.option("--head", type=click.Choice(sorted(HEADS)), default="stage", help="Head to train (heads.HEADS).")
@click.option("--train-store", required=True, help="Feature store of the training split (path or fsspec URL).")
@click.option("--val-store", required=True, help="Feature store of the validation split.")
@click.option("--out", "out_dir", default="", help="Run directory. Default: runs/<head>-<date-time>.")
@click.option("--backbone", "backbones", multiple=True,
              help="Feature group(s) to use; give two to combine (STAGE Table 3). Default: the store's only one.")
@click.option("--combine", type=click.Choice(["mean", "concat"]), default="mean", help="How two backbones are combined.")
@click.option("--head-arg", "head_args", multiple=True, metavar="KEY=VALUE",
              help="Head keyword, repeatable, e.g. --head-arg num_layers=3 --head-arg proximity=false; typed by "
                   "the head's signature (booleans: true/false/yes/no/1/0), unknown keys refused.")
@click.option("--epochs", default=20, help="Epoch cap (STAGE trains 20 epochs).")
@click.option("--batch-size", default=6, help="Query keyframes per step (STAGE: 6 clips).")
@click.option("--sampling", type=click.Choice(["blocks", "random"]), default="random",
              help="Batches of consecutive keyframes sharing context (official STAGE code) or random keyframes.")
@click.option("--lr", type=float, default=None, help="Adam learning rate. Default: the head's paper value.")
@click.option("--weight-decay", default=0.0, help="Adam weight decay.")
@click.option("--lr-patience", default=10, help="Divide the LR by 10 after this many epochs without val mAP gain.")
@click.option("--early-stop", default=5, help="Stop after this many epochs without val mAP gain.")
@click.option("--loss", type=click.Choice(["bce", "pose_softmax", "softmax"]), default="bce",
              help="bce: sigmoid BCE (AVA); pose_softmax: softmax over pose classes + BCE; softmax: single-label.")
@click.option("--pose-ids", default="", help="Comma-separated pose class ids for --loss pose_softmax (AVA: 1-14).")
@click.option("--train-boxes", type=BOXES, default="gt",
              help="Actor boxes to train on.")
@click.option("--train-score-threshold", default=0.9, help="Minimum proposal score for training (SlowFast convention).")
@click.option("--val-boxes", type=BOXES, default="proposals",
              help="Actor boxes to predict on for validation.")
@click.option("--val-score-threshold", default=0.8, help="Minimum proposal score for validation (SlowFast/STAGE: 0.8).")
@click.option("--eval-ids", default="", help="Comma-separated class ids to evaluate. Default: every class of the store.")
@click.option("--no-cap", is_flag=True, help="Keep every detection per keyframe (PySlowFast) instead of the official top 50.")
@click.option("--seed", default=0, help="Random seed.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--no-amp", is_flag=True, help="Disable autocast on GPU.")
@click.option("--cpu-bf16", is_flag=True, help="bfloat16 autocast when training on CPU (fast on CPUs with AMX).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--bank-group", default="",
              help="Store group of first-order relation maps (written by write-bank) fed to a bank head, "
                   "e.g. --head acar --head-arg bank=true --bank-group acfb (ACAR-Net ACFB). Default: no bank.")
@click.option("--init-from", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Start from these weights: an official STAGE checkpoint (.pth; with --head stage --head-arg "
                   "variant=official) or a train-head best.pt/last.pt. Default: random initialisation.")
@click.option("--retrain-classifier", type=click.Choice(["none", "balanced"]), default="none",
              help="After training, retrain only the final classifier with class-balanced keyframe sampling "
                   "(AVA-Kinetics 2021 report, Sec. 2.4) into <out>/balanced/.")
@click.option("--retrain-epochs", default=5,
              help="Epochs of the classifier retraining (the report gives none; 5 is our default).")
def train_head_cli(**kw):
    """Train a head on cached features (a train store and a val store) and write a run directory:
    config.json, metrics.jsonl, last.pt, best.pt, val_predictions.csv, per_class_ap.json."""
    from stagecache.pipelines.training.train import TrainArgs, train

    head_args = parse_head_args(kw["head"], kw["head_args"])  # HeadArgError before anything runs
    try:
        args = TrainArgs(
            train_store=kw["train_store"], val_store=kw["val_store"], head=kw["head"], out_dir=kw["out_dir"],
            backbones=list(kw["backbones"]), combine=kw["combine"], head_args=head_args,
            epochs=kw["epochs"], batch_size=kw["batch_size"], sampling=kw["sampling"], lr=kw["lr"], weight_decay=kw["weight_decay"],
            lr_patience=kw["lr_patience"], early_stop=kw["early_stop"], loss=kw["loss"], pose_ids=_ids(kw["pose_ids"]),
            train_boxes=kw["train_boxes"], train_score_threshold=kw["train_score_threshold"],
            val_boxes=kw["val_boxes"], val_score_threshold=kw["val_score_threshold"],
            eval_label_ids=_ids(kw["eval_ids"]), max_dets_per_kf=None if kw["no_cap"] else 50, seed=kw["seed"],
            device=kw["device"], amp=not kw["no_amp"], cpu_bf16=kw["cpu_bf16"], resume=kw["resume"], progress=not kw["no_progress"],
            command_line=shlex.join(sys.argv), bank_group=kw["bank_group"], init_from=kw["init_from"],
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if kw["retrain_classifier"] != "none" and kw["retrain_epochs"] < 1:
        raise click.UsageError("--retrain-epochs must be >= 1")
    summary = train(args)
    click.echo(f"best val mAP {summary['best_val_map'] * 100:.2f} at epoch {summary['best_epoch']}; run: {summary['run_dir']}")
    if kw["retrain_classifier"] == "balanced":
        from stagecache.pipelines.training.balanced import retrain_classifier_balanced

        bal = retrain_classifier_balanced(summary["run_dir"], epochs=kw["retrain_epochs"], device=args.device,
                                          progress=args.progress)
        click.echo(f"class-balanced classifier: best val mAP {bal['best_val_map'] * 100:.2f} at epoch "
                   f"{bal['best_epoch']}; run: {bal['run_dir']}")


@click.command(context_settings={"show_default": True})
@dataclass_options(PredictArgs, decls={"run_dir": "--run"}, types={"boxes": BOXES, "batch_size": click.IntRange(min=1)})
def predict_cli(**kw):
    """Run a trained head over any store and write an AVA predictions CSV."""
    from stagecache.pipelines.training.predict import predict

    if not os.path.isfile(kw["run_dir"]):  # an official STAGE checkpoint is checked by pipelines/training/init_from.py
        preflight_predict(kw["run_dir"], kw["checkpoint"], kw["store"])  # one-line errors before any work
    path = predict(PredictArgs(**kw))
    click.echo(f"wrote {path}")
