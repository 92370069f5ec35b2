"""`predict-video`: a trained head on one raw video -> AVA predictions CSV + annotated MP4."""
from __future__ import annotations

import click

from stagecache.core.errors import UserError
from stagecache.pipelines.commands.options import dataclass_options
from stagecache.pipelines.tools.predict_video import PredictVideoArgs


@click.command(context_settings={"show_default": True})
@dataclass_options(PredictVideoArgs)
def predict_video_cli(**kw):
    """Detect people (or read proposals), extract features with the run's backbone, run the trained
    head and write an AVA predictions CSV and an annotated MP4."""
    from stagecache.pipelines.tools.predict_video import run_predict_video

    try:
        res = run_predict_video(PredictVideoArgs(**kw), echo=lambda m: click.echo(m, err=True))
    except UserError:  # the CLI's one error path prints it (pipelines/commands/cli.py)
        raise
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"predictions: {res['csv']}\nvideo: {res['video']}")
