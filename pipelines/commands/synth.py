"""`synth`: the synthetic AVA-format dataset (videos + CSVs) and the feature-level synthetic store."""
from __future__ import annotations

import json
from pathlib import Path

import click

from stagecache.core.errors import UserError
from stagecache.extract.synthetic import FeatureStoreArgs, VideoDatasetArgs
from stagecache.pipelines.commands.options import dataclass_options


@click.group("synth")
def synth_cli() -> None:
    """Synthetic AVA-format data, deterministic by seed (see extract/synthetic/)."""


@synth_cli.command("videos", context_settings={"show_default": True})
@dataclass_options(VideoDatasetArgs)
def videos_cmd(**kw) -> None:
    """Render synthetic videos and write AVA-format annotations, proposals, objects."""
    try:
        out = VideoDatasetArgs(**kw).run()
    except UserError:  # the CLI's one error path prints it (pipelines/commands/cli.py)
        raise
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    info = json.loads((Path(out) / "dataset.json").read_text())
    n = sum(len(s["videos"]) for s in info["splits"].values())
    click.echo(f"wrote {n} videos ({kw['seconds']} s, {kw['fps']} fps, {kw['width']}x{kw['height']}) and annotations "
               f"for splits {list(info['splits'])} to {out}")


@synth_cli.command("store", context_settings={"show_default": True})
@dataclass_options(FeatureStoreArgs)
def store_cmd(**kw) -> None:
    """Write a feature-level synthetic store (no video) for tests and benchmarks."""
    try:
        FeatureStoreArgs(progress=True, **kw).run()
    except UserError:  # the CLI's one error path prints it (pipelines/commands/cli.py)
        raise
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    levels = ",".join(kw["levels"])
    click.echo(f"wrote synthetic store {kw['path']} (split {kw['split']}, {kw['n_videos']} videos x "
               f"{kw['keyframes_per_video']} keyframes, groups base + {kw['backbone']}"
               f"{' with ' + levels if levels else ''})")
