"""`extract detections`: person and/or VG object detections over keyframes (extract/detectors/job.py)."""
from __future__ import annotations

import click

from stagecache.extract.detectors.job import DetectionsArgs
from stagecache.pipelines.commands.options import dataclass_options

_FILE = click.Path(exists=True, dir_okay=False)
_UNIT = click.FloatRange(0, 1)
_IOU = click.FloatRange(0, 1, min_open=True)


@click.command("detections")
@dataclass_options(
    DetectionsArgs, decls={"person_nms_thresh": "--person-nms", "object_nms_thresh": "--object-nms",
                           "videos": "--video", "out_dir": "--out"},
    types={"video_dir": click.Path(exists=True, file_okay=False), "out_dir": click.Path(file_okay=False),
           "keyframes": _FILE, "person_detector": click.Choice(["torchvision", "detectron2", "precomputed", "none"]),
           "person_weights": _FILE, "person_config": _FILE, "person_file": click.Path(exists=True),
           "person_score_thresh": _UNIT, "person_nms_thresh": _IOU, "person_max": click.IntRange(min=1),
           "person_min_size": click.IntRange(min=32), "person_max_size": click.IntRange(min=32),
           "objects": click.Choice(["vg", "vg-detectron2", "precomputed", "none"]), "vg_weights": _FILE,
           "vg_config": _FILE, "vg_classes": _FILE, "objects_file": click.Path(exists=True),
           "object_score_thresh": _UNIT, "object_nms_thresh": _IOU, "max_objects": click.IntRange(min=1),
           "min_objects": click.IntRange(min=0), "box_source": click.Choice(["regressed", "proposal"]),
           "vg_min_size": click.IntRange(min=32), "vg_max_size": click.IntRange(min=32),
           "batch_size": click.IntRange(min=1), "annotations": _FILE, "side": click.Choice(["train", "test"]),
           "frame_stride": click.IntRange(min=1)},
)
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
