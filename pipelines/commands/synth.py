"""`synth`: the synthetic AVA-format dataset (videos + CSVs) and the feature-level synthetic store."""
from __future__ import annotations

import dataclasses
import json
import shlex
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
               f"for splits {', '.join(info['splits'])} to {out}")
    click.echo("next, the features of each split (a random-init backbone on the CPU: the pipeline is real, the "
               "features mean nothing; README, 'From synthetic videos to a picture'):")
    for cmd in extract_commands(Path(kw["out_dir"]), info):
        click.echo(f"  {cmd}")


def extract_commands(out: Path, info: dict, cache: str = "cache") -> list[str]:
    """`extract features` of each split `synth videos` wrote into `out` (its dataset.json `info`):
    the files it names, the synthetic timing (video time = AVA timestamp - 900), a small random-init
    backbone input on the CPU, the val side's excluded timestamps recorded for train-head."""
    ann = out / "annotations"
    cmds = []
    for split, files in info["splits"].items():
        args = ["extract", "features", "--split", split, "--videos", out / info["videos_dir"],
                "--label-map", out / info["label_map"], "--annotations", out / files["annotations"],
                "--proposals", out / files["proposals"], "--objects", "precomputed",
                "--objects-file", out / files["objects"], "--object-classes", ann / "object_classes.txt"]
        if split != "train":  # what train-head's validation leaves out, as evaluate --excluded does
            args += ["--excluded", out / files["excluded"]]
        args += ["--time-offset", f"{info['video_start']:g}", "--random-init", "--sampling-args",
                 '{"short_side": 96}', "--device", "cpu", "--out", f"{cache}/{split}.zarr"]
        cmds.append(shlex.join(str(a) for a in args))
    return cmds


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
    if kw["split"] == "train":  # next: a val store of other videos (same dims and levels), then a head on both
        other = str(Path(kw["path"]).with_name(f"val{Path(kw['path']).suffix or '.zarr'}"))
        click.echo("next, a val store of other videos, then a head trained on both:")
        click.echo("  " + shlex.join(["synth", "store", "--split", "val", "--seed", str(kw["seed"] + 1), "--videos",
                                      str(max(2, kw["n_videos"] // 3)), "--first-video",
                                      str(kw["first_video"] + kw["n_videos"] + 1000), *_same_store_options(kw),
                                      "--out", other]))
        click.echo("  " + shlex.join(["train-head", "--train-store", kw["path"], "--val-store", other, "--head",
                                      "stage", "--epochs", "8", "--lr", "1e-3", "--val-score-threshold", "0.5",
                                      "--device", "cpu"]))


def _same_store_options(kw: dict) -> list[str]:
    """The options of `synth store` that a val store must share with its train store (dims, group,
    levels, keyframes, noise), where they are not the defaults."""
    out = []
    for f in dataclasses.fields(FeatureStoreArgs):
        if f.name not in ("actor_dim", "object_dim", "backbone", "levels", "keyframes_per_video", "noise"):
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if kw[f.name] != default:
            value = ",".join(kw[f.name]) if isinstance(kw[f.name], (list, tuple)) else str(kw[f.name])
            out += [f.metadata.get("option", "--" + f.name.replace("_", "-")), value]
    return out
