"""`evaluate`: AVA frame-mAP of a predictions CSV, official / PySlowFast / MMAction2 protocol (logic in
pipelines/evaluation/ava.py), or JHMDB-21 / UCF101-24 frame- and video-mAP (pipelines/evaluation/tubes.py)."""
from __future__ import annotations

import click

from stagecache.pipelines.commands.options import Command, dataclass_options
from stagecache.pipelines.evaluation.evaluate_args import EvaluateCommandArgs, run_evaluate_command


@click.command("evaluate", cls=Command)
@dataclass_options(EvaluateCommandArgs)
def evaluate_cli(**kw):
    """Frame-mAP of PRED against GT (ActivityNet AVA protocol unless --protocol)."""
    try:
        args = EvaluateCommandArgs(**kw)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    run_evaluate_command(args, echo=click.echo)
