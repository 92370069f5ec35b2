"""`demo`."""
from __future__ import annotations

import click


@click.command(context_settings={"show_default": True})
@click.option("--out", default="demo_out", help="Output directory (data, stores, runs, ablation).")
@click.option("--seed", default=0, help="Seed of the synthetic data and the runs.")
@click.option("--videos", default=3, help="Synthetic videos per split.")
@click.option("--seconds", default=10, help="Seconds per synthetic video (keyframes 902 .. 900+seconds-2).")
@click.option("--short-side", default=96, help="Frame short side fed to the backbone (AVA uses 256).")
@click.option("--extract-epochs", default=5, help="Epochs of the heads trained on the extracted stores.")
@click.option("--feature-videos", default=16, help="Train videos of the feature-level store used by the ablation.")
@click.option("--keyframes-per-video", default=30, help="Keyframes per video of the feature-level store.")
@click.option("--ablation-epochs", default=8, help="Epochs per ablation run.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def demo_cli(no_progress, **kw):
    """Generate synthetic data, extract features (random-init backbone), train linear and stage,
    evaluate them, run a small ablation, and print the table and where the plots are."""
    from pipelines.demo import DemoArgs, print_report, run_demo

    try:
        args = DemoArgs(progress=not no_progress, **kw)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    print_report(run_demo(args), echo=click.echo)
