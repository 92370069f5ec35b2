"""`demo`."""
from __future__ import annotations

import click

from stagecache.pipelines.commands.options import dataclass_options
from stagecache.pipelines.tools.demo import DemoArgs


@click.command(context_settings={"show_default": True})
@dataclass_options(DemoArgs)
def demo_cli(**kw):
    """Generate synthetic data, extract features (random-init backbone), train linear and stage,
    evaluate them, run a small ablation, and print the table and where the plots are."""
    from stagecache.pipelines.tools.demo import print_report, run_demo

    try:
        args = DemoArgs(**kw)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    print_report(run_demo(args), echo=click.echo)
