"""`ablate`: a sweep of train-head runs (presets of STAGE Tables 6/8, ACAR-Net Table 1, all heads)."""
from __future__ import annotations

import shlex
import sys

import click

from stagecache.core.errors import UserError
from stagecache.pipelines.ablation.ablate_args import AblateArgs
from stagecache.pipelines.commands.options import dataclass_options


@click.command(context_settings={"show_default": True})
@dataclass_options(AblateArgs)
def ablate_cli(**kw):
    """Train every configuration x seed of an ablation spec on one store pair and write results.csv,
    results.md (mean ± std over seeds, per class group, grid), gain_*.png and spec.json. Finished runs
    are skipped on a rerun. Runs go to a process pool here (--executor process) or are submitit jobs,
    one per run (--executor local / slurm; logs in OUT/logs)."""
    from stagecache.pipelines.ablation.sweep import ablate

    try:
        args = AblateArgs(**kw, command_line=shlex.join(sys.argv))
        result = ablate(args, echo=lambda m: click.echo(m, err=True))
    except UserError:  # the CLI's one error path prints it (pipelines/commands/cli.py)
        raise
    except (ValueError, FileExistsError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"results: {result['out'] / 'results.md'}")
    if any(s.startswith("failed") for s in result["status"].values()):
        sys.exit(1)
