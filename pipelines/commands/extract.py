"""`extract features` (`pipelines.launch.extract_array.ExtractFeaturesArgs`: `ExtractArgs` -> `run_extract`
in this process, or `--executor local|slurm` -> `launch_extract`, a job array of shards) and
`extract tracks` (`extract.tracking.TracksArgs` -> `write_tracks`).

The `extract` group is `extract_cli`; the `detections` subcommand lives in another module and is
added to this group by pipelines/commands/cli.py.
"""

from __future__ import annotations

import click

from stagecache.core.errors import UserError
from stagecache.extract.tracking import TracksArgs
from stagecache.pipelines.launch.extract_array import ExtractFeaturesArgs, launch_extract
from stagecache.pipelines.commands.options import Command, dataclass_options


@click.group("extract")
def extract_cli():
    """Stage 1: run frozen backbones / detectors once and write the feature store."""


@extract_cli.command("features", cls=Command, context_settings={"show_default": True})
@dataclass_options(ExtractFeaturesArgs)
def features_cmd(**kw):
    """Backbone RoI features of every actor box into the feature store (resumable, sharded; in this
    process, or as a job array of shards with --executor local / slurm)."""
    try:
        args = ExtractFeaturesArgs(**kw)
    except UserError:  # a bad executor or jhmdb/ucf24 split name: the CLI's one error path (exit 1)
        raise
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if args.executor != "inline":
        result = launch_extract(args, echo=click.echo)
        if result.get("failed_tasks") or (result.get("summary") or {}).get("failed"):
            raise SystemExit(1)
        return
    from stagecache.extract.features import run_extract

    summary = run_extract(args)
    if summary["failed"]:
        raise SystemExit(1)


@extract_cli.command("tracks", context_settings={"show_default": True})
@dataclass_options(TracksArgs)
def tracks_cmd(**kw):
    """Link person boxes across keyframes (IoU + Hungarian) and write the store's `tracks` group.

    Heads that need identities (igmn) read it instead of base/actor_track, which holds only the
    annotation's person ids (-1 on detector boxes)."""
    from stagecache.extract.store import StoreError
    from stagecache.extract.tracking import write_tracks

    args = TracksArgs(**kw)  # click's ranges already hold what it checks
    try:
        ids = write_tracks(args.store, iou_threshold=args.iou_threshold, max_gap=args.max_gap,
                           separate_gt=args.separate_gt)
    except (StoreError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e) if args.store in str(e) else f"{args.store}: {e}") from None
    n = int(ids.max() + 1) if ids.size else 0
    click.echo(f"{args.store}: {ids.size} boxes linked into {n} tracks (group 'tracks')")
