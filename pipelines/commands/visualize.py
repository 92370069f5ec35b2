"""`visualize`: a keyframe picture with boxes, labels, scores and relation-head attention."""
from __future__ import annotations

import click

from stagecache.core.errors import UserError
from stagecache.pipelines.commands.options import dataclass_options
from stagecache.pipelines.tools.visualize_args import VisualizeArgs


@click.command(context_settings={"show_default": True})
@dataclass_options(VisualizeArgs)
def visualize_cli(**kw):
    """Draw a keyframe with its boxes, predicted labels and scores; with --run, STAGE attention lines
    from each actor to its neighbours and ACAR-Net HR2O attention heat maps."""
    from stagecache.pipelines.tools.visualize import run_visualize

    try:
        files = run_visualize(VisualizeArgs(**kw))
    except UserError:  # the CLI's one error path prints it (pipelines/commands/cli.py)
        raise
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for f in files:
        click.echo(f"wrote {f}")
