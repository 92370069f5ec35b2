"""`extract detections`: person and/or VG object detections over keyframes (extract/detectors/job.py)."""
from __future__ import annotations

import click


@click.command("detections")
@click.option("--video-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of videos (<id>.mp4 ...) or PySlowFast frame folders.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: proposals.csv, objects.csv, parts/<video>.npz (features), config JSON.")
@click.option("--keyframes", default=None, type=click.Path(exists=True, dir_okay=False),
              help="CSV whose first two columns are video,timestamp (e.g. AVA annotations). [default: none]")
@click.option("--timestamps", default=None,
              help="start:end[:step] seconds for every video found, e.g. 902:1798. [default: none]")
@click.option("--video", "videos", multiple=True, help="Only these video ids (repeatable). [default: all]")
@click.option("--fps", default=30.0, show_default=True, type=float, help="Frame-grid rate of the videos.")
@click.option("--time-offset", default=0.0, show_default=True, type=float,
              help="video time = timestamp - offset (900 for AVA's trimmed 15-min clips / frame folders).")
@click.option("--kinetics-names", is_flag=True, default=False, show_default=True,
              help="Videos named <id>_<start>_<end>: offset = start per video.")
@click.option("--person-detector", default="torchvision", show_default=True,
              type=click.Choice(["torchvision", "detectron2", "precomputed", "none"]),
              help="Person detector.")
@click.option("--person-weights", default=None, type=click.Path(exists=True, dir_okay=False),
              help="torchvision state_dict (fasterrcnn_resnet50_fpn_v2 COCO) or detectron2 weights. [default: none]")
@click.option("--person-config", default=None, type=click.Path(exists=True, dir_okay=False),
              help="detectron2 config file for --person-detector detectron2. [default: none]")
@click.option("--person-file", default=None, type=click.Path(exists=True),
              help="Proposals file (CSV / MMAction2 pkl / COCO json) for --person-detector precomputed. [default: none]")
@click.option("--person-score-thresh", default=0.8, show_default=True, type=click.FloatRange(0, 1),
              help="Minimum person score.")
@click.option("--person-nms", "person_nms_thresh", default=0.5, show_default=True,
              type=click.FloatRange(0, 1, min_open=True), help="Person NMS IoU (1 = no NMS).")
@click.option("--person-max", default=50, show_default=True, type=click.IntRange(min=1),
              help="Maximum people per keyframe.")
@click.option("--person-min-size", default=800, show_default=True, type=click.IntRange(min=32),
              help="torchvision person detector input shortest side.")
@click.option("--person-max-size", default=1333, show_default=True, type=click.IntRange(min=32),
              help="torchvision person detector input longest side.")
@click.option("--objects", default="none", show_default=True,
              type=click.Choice(["vg", "vg-detectron2", "precomputed", "none"]),
              help="Object detector: built-in VG Faster R-CNN, the same through detectron2, bottom-up-attention "
                   "TSV/npz files, or none.")
@click.option("--vg-weights", default=None, type=click.Path(exists=True, dir_okay=False),
              help="faster_rcnn_from_caffe_attr.pkl / faster_rcnn_from_caffe.pkl (or a detectron2 .pth). [default: none]")
@click.option("--vg-config", default=None, type=click.Path(exists=True, dir_okay=False),
              help="py-bottom-up-attention config for --objects vg-detectron2. [default: none]")
@click.option("--vg-classes", default=None, type=click.Path(exists=True, dir_okay=False),
              help="objects_vocab.txt (1600 lines); without it classes are named vg_<i>. [default: none]")
@click.option("--objects-file", default=None, type=click.Path(exists=True),
              help="bottom-up-attention TSV, npz file or folder of npz for --objects precomputed. [default: none]")
@click.option("--object-score-thresh", default=0.2, show_default=True, type=click.FloatRange(0, 1),
              help="Minimum object score (bottom-up attention: 0.2).")
@click.option("--object-nms", "object_nms_thresh", default=0.3, show_default=True,
              type=click.FloatRange(0, 1, min_open=True), help="Per-class NMS IoU for objects.")
@click.option("--max-objects", default=25, show_default=True, type=click.IntRange(min=1),
              help="Maximum objects per keyframe (top by score).")
@click.option("--min-objects", default=0, show_default=True, type=click.IntRange(min=0),
              help="Minimum objects per keyframe (filled with the best remaining proposals).")
@click.option("--box-source", default="regressed", show_default=True, type=click.Choice(["regressed", "proposal"]),
              help="Object box: class-regressed (py-bottom-up-attention) or the RPN proposal (Caffe generate_tsv).")
@click.option("--vg-min-size", default=600, show_default=True, type=click.IntRange(min=32),
              help="VG detector input shortest side.")
@click.option("--vg-max-size", default=1000, show_default=True, type=click.IntRange(min=32),
              help="VG detector input longest side.")
@click.option("--random-init", is_flag=True, default=False, show_default=True,
              help="Random detector weights: TESTS/DEMO ONLY, the detections are meaningless.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Keyframes per batch.")
@click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda, cuda:1).")
@click.option("--overwrite", is_flag=True, default=False, show_default=True,
              help="Recompute videos already in --out (otherwise they are kept and the job resumes).")
def detections_cmd(**kw) -> None:
    """Run a person detector and/or the VG object detector over keyframes; write AVA-style CSVs."""
    from extract.detectors.job import DetectionsArgs, run_detections

    kw["videos"] = tuple(kw["videos"])
    try:
        args = DetectionsArgs(**kw)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    summary = run_detections(args)
    click.echo(f"{summary['videos']} videos, {summary['keyframes']} keyframes: {summary['people']} people, "
               f"{summary['objects']} objects -> {args.out_dir}")
