"""`extract detections`: person and/or VG object detections over keyframes (extract/detectors/job.py)."""
from __future__ import annotations

import click

from stagecache.extract.detections_args import DetectionsArgs
from stagecache.pipelines.commands.options import Command, dataclass_options


@click.command("detections", cls=Command)
@dataclass_options(DetectionsArgs)
def detections_cmd(**kw) -> None:
    """Run a person detector and/or the VG object detector over keyframes; write AVA-style CSVs."""
    from stagecache.extract.detectors.job import run_detections

    kw["videos"] = tuple(kw["videos"])
    try:
        args = DetectionsArgs(**kw)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    summary = run_detections(args)
    click.echo(f"{summary['videos']} videos, {summary['keyframes']} keyframes: {summary['people']} people, "
               f"{summary['objects']} objects -> {args.out_dir}")
