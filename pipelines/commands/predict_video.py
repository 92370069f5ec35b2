"""`predict-video`: a trained head on one raw video -> AVA predictions CSV + annotated MP4."""
from __future__ import annotations

import click


@click.command(context_settings={"show_default": True})
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option("--run", "run_dir", required=True, help="train-head run directory (its store's backbone is used).")
@click.option("--out", "out_dir", required=True, help="Output directory (CSV, MP4, proposals.csv, predict_video.json).")
@click.option("--proposals", default="", help="AVA proposals file (csv/pkl/json) with this video's person boxes.")
@click.option("--person-detector", default="", help="Person detector name (extract.detectors), e.g. torchvision, instead of --proposals.")
@click.option("--detector-weights", default="", help="Weights file of the person detector.")
@click.option("--detector-random-init", is_flag=True, help="Random-weight detector: tests and demo ONLY (warns).")
@click.option("--person-score", default=0.8, help="Person detector score threshold.")
@click.option("--objects", default="none", help="Object detector name (extract.detectors) for heads that use objects.")
@click.option("--object-weights", default="", help="Weights file of the object detector.")
@click.option("--video-name", default="", help="AVA video id. Default: the file's stem.")
@click.option("--time-offset", default=0.0, help="video time = AVA timestamp - offset (900 for AVA's trimmed clips).")
@click.option("--stride", default=1.0, help="Seconds between keyframes (detector mode).")
@click.option("--start", type=float, default=None, help="First keyframe timestamp (detector mode). Default: 1 s into the video.")
@click.option("--end", type=float, default=None, help="Last keyframe timestamp (detector mode). Default: 1 s before the end.")
@click.option("--score-threshold", default=0.0, help="Minimum person-box score given to the head.")
@click.option("--top-k", default=3, help="Labels drawn per box.")
@click.option("--min-score", default=0.3, help="Labels below this score are not drawn.")
@click.option("--show-seconds", default=0.5, help="Boxes of a keyframe are drawn on frames within this many seconds of it.")
@click.option("--backbone-checkpoint", default="", help="Backbone checkpoint. Default: the one recorded in the run's store.")
@click.option("--backbone-random-init", is_flag=True, help="Random-weight backbone: tests and demo ONLY (warns).")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--keep-temp", is_flag=True, help="Keep the temporary one-video dataset and store.")
def predict_video_cli(**kw):
    """Detect people (or read proposals), extract features with the run's backbone, run the trained
    head and write an AVA predictions CSV and an annotated MP4."""
    from pipelines.predict_video import PredictVideoArgs, run_predict_video

    try:
        res = run_predict_video(PredictVideoArgs(**kw), echo=lambda m: click.echo(m, err=True))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"predictions: {res['csv']}\nvideo: {res['video']}")
