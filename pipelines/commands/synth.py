"""`synth`: the synthetic AVA-format dataset (videos + CSVs) and the feature-level synthetic store."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("synth")
def synth_cli() -> None:
    """Synthetic AVA-format data, deterministic by seed (see extract/synthetic.py)."""


@synth_cli.command("videos")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (videos/, annotations/, dataset.json).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--videos", "n_videos", default=2, show_default=True, type=click.IntRange(min=1),
              help="Videos per split.")
@click.option("--seconds", default=6, show_default=True, type=click.IntRange(min=4),
              help="Video length in seconds (keyframes 902 .. 900 + seconds - 2).")
@click.option("--fps", default=30, show_default=True, type=click.IntRange(min=1), help="Frame rate.")
@click.option("--width", default=160, show_default=True, type=int, help="Frame width (even).")
@click.option("--height", default=120, show_default=True, type=int, help="Frame height (even).")
@click.option("--splits", default="train,val", show_default=True,
              help="Comma-separated split names.")
@click.option("--codec", default="mpeg4", show_default=True, help="PyAV video codec.")
def videos_cmd(out_dir, seed, n_videos, seconds, fps, width, height, splits, codec) -> None:
    """Render synthetic videos and write AVA-format annotations, proposals, objects."""
    from extract.synthetic import VideoDatasetArgs

    split_names = tuple(s.strip() for s in splits.split(",") if s.strip())
    try:
        out = VideoDatasetArgs(out_dir=out_dir, seed=seed, n_videos=n_videos, seconds=seconds,
                               fps=fps, width=width, height=height, splits=split_names,
                               codec=codec).run()
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    info = json.loads((Path(out) / "dataset.json").read_text())
    n = sum(len(s["videos"]) for s in info["splits"].values())
    click.echo(f"wrote {n} videos ({seconds} s, {fps} fps, {width}x{height}) and annotations "
               f"for splits {list(info['splits'])} to {out}")


@synth_cli.command("store")
@click.option("--out", "path", required=True, help="Store path (created or resumed).")
@click.option("--split", default="train", show_default=True, help="Split name recorded in the store.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--videos", "n_videos", default=4, show_default=True, type=click.IntRange(min=1),
              help="Number of videos.")
@click.option("--first-video", default=0, show_default=True, type=click.IntRange(min=0),
              help="Index of the first video (names syn_<index>).")
@click.option("--keyframes", default=30, show_default=True, type=click.IntRange(min=1),
              help="Keyframes per video.")
@click.option("--actor-dim", default=64, show_default=True, type=click.IntRange(min=1),
              help="Actor feature dimension (2304 for SlowFast R50 scale).")
@click.option("--object-dim", default=32, show_default=True, type=click.IntRange(min=1),
              help="Object feature dimension.")
@click.option("--backbone", default="synthetic", show_default=True,
              help="Name of the feature group.")
@click.option("--proposals/--no-proposals", default=True, show_default=True,
              help="Also write jittered-GT and false-positive proposal rows.")
@click.option("--noise", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Feature noise (expected norm of the noise vector).")
@click.option("--levels", default="", show_default=True,
              help="Extra backbone levels, comma-separated subset of roi,temporal,context "
                   "(for heads such as acrn/acar (context), sonly/igmn dam (roi), tonly (temporal)).")
def store_cmd(path, split, seed, n_videos, first_video, keyframes, actor_dim, object_dim, backbone,
              proposals, noise, levels) -> None:
    """Write a feature-level synthetic store (no video) for tests and benchmarks."""
    from extract.synthetic import FeatureStoreArgs

    try:
        FeatureStoreArgs(path=path, split=split, seed=seed, n_videos=n_videos,
                         keyframes_per_video=keyframes, actor_dim=actor_dim, object_dim=object_dim,
                         backbone=backbone, proposals=proposals, noise=noise,
                         first_video=first_video, progress=True,
                         levels=[v.strip() for v in levels.split(",") if v.strip()]).run()
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(f"wrote synthetic store {path} (split {split}, {n_videos} videos x {keyframes} "
               f"keyframes, groups base + {backbone}"
               f"{' with ' + levels if levels else ''})")
