"""`synth`: the synthetic AVA-format dataset (videos + CSVs) and the feature-level synthetic store."""
from __future__ import annotations

import json
from pathlib import Path

import click

from stagecache.core.errors import UserError
from stagecache.extract.synthetic import FeatureStoreArgs, VideoDatasetArgs
from stagecache.pipelines.commands.options import dataclass_options, default_of


@click.group("synth")
def synth_cli() -> None:
    """Synthetic AVA-format data, deterministic by seed (see extract/synthetic/)."""


@synth_cli.command("videos")
@dataclass_options(VideoDatasetArgs, skip=("splits",), decls={"out_dir": "--out", "n_videos": "--videos"},
                   types={"out_dir": click.Path(file_okay=False), "n_videos": click.IntRange(min=1),
                          "seconds": click.IntRange(min=4), "fps": click.IntRange(min=1)})
@click.option("--splits", default=",".join(default_of(VideoDatasetArgs, "splits")), show_default=True,
              help="Comma-separated split names.")
def videos_cmd(splits, **kw) -> None:
    """Render synthetic videos and write AVA-format annotations, proposals, objects."""
    split_names = tuple(s.strip() for s in splits.split(",") if s.strip())
    try:
        out = VideoDatasetArgs(splits=split_names, **kw).run()
    except UserError:  # the CLI's one error path prints it (pipelines/commands/cli.py)
        raise
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    info = json.loads((Path(out) / "dataset.json").read_text())
    n = sum(len(s["videos"]) for s in info["splits"].values())
    click.echo(f"wrote {n} videos ({kw['seconds']} s, {kw['fps']} fps, {kw['width']}x{kw['height']}) and annotations "
               f"for splits {list(info['splits'])} to {out}")


@synth_cli.command("store")
@dataclass_options(FeatureStoreArgs, skip=("progress", "levels"),
                   decls={"path": "--out", "n_videos": "--videos", "keyframes_per_video": "--keyframes"},
                   types={"n_videos": click.IntRange(min=1), "first_video": click.IntRange(min=0),
                          "keyframes_per_video": click.IntRange(min=1), "actor_dim": click.IntRange(min=1),
                          "object_dim": click.IntRange(min=1), "noise": click.FloatRange(min=0)})
@click.option("--levels", default="", show_default=True,
              help="Extra backbone levels, comma-separated subset of roi,temporal,context "
                   "(for heads such as acrn/acar (context), sonly/igmn dam (roi), tonly (temporal)).")
def store_cmd(levels, **kw) -> None:
    """Write a feature-level synthetic store (no video) for tests and benchmarks."""
    try:
        FeatureStoreArgs(progress=True, levels=[v.strip() for v in levels.split(",") if v.strip()], **kw).run()
    except UserError:  # the CLI's one error path prints it (pipelines/commands/cli.py)
        raise
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(f"wrote synthetic store {kw['path']} (split {kw['split']}, {kw['n_videos']} videos x "
               f"{kw['keyframes_per_video']} keyframes, groups base + {kw['backbone']}"
               f"{' with ' + levels if levels else ''})")
