"""`visualize`: a keyframe picture with boxes, labels, scores and relation-head attention."""
from __future__ import annotations

import click


@click.command(context_settings={"show_default": True})
@click.option("--out", "out_dir", required=True, help="Output directory for the PNG files.")
@click.option("--timestamp", type=float, required=True, help="Keyframe timestamp (AVA seconds).")
@click.option("--video", default="", help="Video file to take the frame from. Default: a blank canvas.")
@click.option("--video-name", default="", help="AVA video id in the predictions/store. Default: the video file's stem.")
@click.option("--time-offset", default=0.0, help="video time = timestamp - offset (900 for AVA's trimmed clips and the synthetic data).")
@click.option("--predictions", default="", help="AVA predictions CSV to draw (alternative to --run/--store).")
@click.option("--label-map", default="", help="Label map of --predictions. Default: the AVA 60-class list.")
@click.option("--run", "run_dir", default="", help="train-head run directory: predict the keyframe and draw attention.")
@click.option("--store", default="", help="Feature store holding the keyframe (with --run).")
@click.option("--boxes", type=click.Choice(["gt", "proposals", "gt+proposals"]), default="proposals", help="Actor boxes (with --run).")
@click.option("--score-threshold", default=0.8, help="Minimum proposal score (with --run).")
@click.option("--top-k", default=3, help="Labels shown per actor.")
@click.option("--min-score", default=0.05, help="Labels below this score are not shown.")
@click.option("--actor", default=-1, help="Actor (index on the keyframe) whose STAGE attention is drawn; -1: all.")
@click.option("--layer", default=-1, help="Layer / HR2O block whose attention is drawn (-1: the last).")
@click.option("--width", default=640, help="Blank canvas width.")
@click.option("--height", default=360, help="Blank canvas height.")
@click.option("--device", default="cpu", help="Device for the head (cpu, cuda, auto).")
def visualize_cli(**kw):
    """Draw a keyframe with its boxes, predicted labels and scores; with --run, STAGE attention lines
    from each actor to its neighbours and ACAR-Net HR2O attention heat maps."""
    from pipelines.visualize import VisualizeArgs, run_visualize

    try:
        files = run_visualize(VisualizeArgs(**kw))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for f in files:
        click.echo(f"wrote {f}")
