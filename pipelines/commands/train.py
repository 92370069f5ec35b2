"""`train-head` and `predict`."""
from __future__ import annotations

import os
import shlex
import sys

import click

from stagecache.pipelines.commands.options import dataclass_options
# The argument dataclasses' modules import no torch: --help answers at once (issue 32); what runs
# the command is imported when it runs.
from stagecache.pipelines.training.predict_args import PredictArgs
from stagecache.pipelines.training.train_args import TrainArgs


@click.command(context_settings={"show_default": True})
@dataclass_options(TrainArgs)
def train_head_cli(**kw):
    """Train a head on cached features (a train store and a val store) and write a run directory:
    config.json, metrics.jsonl, last.pt, best.pt, val_predictions.csv, per_class_ap.json."""
    from stagecache.pipelines.training.head_args import parse_head_args
    from stagecache.pipelines.training.train import train

    # The --head-arg pairs typed by the head chosen: a HeadArgError before anything runs.
    kw["head_args"] = parse_head_args(kw["head"], kw["head_args"])
    try:
        args = TrainArgs(**kw, command_line=shlex.join(sys.argv))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    summary = train(args)
    click.echo(f"best val mAP {summary['best_val_map'] * 100:.2f} at epoch {summary['best_epoch']}; run: {summary['run_dir']}")
    if args.retrain_classifier == "balanced":
        from stagecache.pipelines.training.balanced import retrain_classifier_balanced

        bal = retrain_classifier_balanced(summary["run_dir"], epochs=args.retrain_epochs, device=args.device,
                                          progress=args.progress)
        click.echo(f"class-balanced classifier: best val mAP {bal['best_val_map'] * 100:.2f} at epoch "
                   f"{bal['best_epoch']}; run: {bal['run_dir']}")


@click.command(context_settings={"show_default": True})
@dataclass_options(PredictArgs)
def predict_cli(**kw):
    """Run a trained head over any store and write an AVA predictions CSV."""
    from stagecache.pipelines.training.predict import predict
    from stagecache.pipelines.training.split import check_predict

    if not os.path.isfile(kw["run_dir"]):  # an official STAGE checkpoint is checked by pipelines/training/init_from.py
        check_predict(kw["run_dir"], kw["checkpoint"], kw["store"])  # one-line errors before any work
    path = predict(PredictArgs(**kw))
    click.echo(f"wrote {path}")
