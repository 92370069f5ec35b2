"""`extract features`: click options -> `extract.features.ExtractArgs` -> `run_extract`.

The `extract` group is `extract_cli`; the `detections` subcommand lives in another module and is
added to this group by pipelines/commands/cli.py.
"""

from __future__ import annotations

import json

import click

from stagecache.extract.backbones import BACKBONES
from stagecache.extract.store import LEVELS


def _json_dict(ctx, param, value):
    if not value:
        return {}
    try:
        d = json.loads(value)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}") from None
    if not isinstance(d, dict):
        raise click.BadParameter("must be a JSON object")
    return d


def _backbone(ctx, param, value):
    if value not in BACKBONES:
        raise click.BadParameter(f"unknown backbone {value!r}; valid: {', '.join(sorted(BACKBONES))}")
    return value


def _levels(ctx, param, value):
    levels = tuple(x for x in (value or "").split(",") if x)
    bad = set(levels) - set(LEVELS)
    if bad:
        raise click.BadParameter(f"unknown levels {sorted(bad)}; valid: {', '.join(LEVELS)}")
    return levels


@click.group("extract")
def extract_cli():
    """Stage 1: run frozen backbones / detectors once and write the feature store."""


@extract_cli.command("features")
@click.option("--split", required=True, help="Split name stored in the store (train, val, ...); jhmdb/ucf24: "
              "N with --side, or train<N> / test<N>.")
@click.option("--side", default=None, type=click.Choice(["train", "test"]),
              help="jhmdb/ucf24: which videos of split N (store split name <side><N>).")
@click.option("--frame-stride", default=None, type=click.IntRange(min=1), show_default="every annotated frame",
              help="jhmdb/ucf24: keyframes at frames 1, 1+N, 1+2N, ... that have a GT box.")
@click.option("--gt-jitter", default=0.0, show_default=True, type=click.FloatRange(0, 0.5, max_open=True),
              help="jhmdb/ucf24 training boxes without detections: add jittered copies of every GT box as "
                   "proposals (score 1, labels by --label-iou transfer; use 0.5 with F = 0.1), each side moved "
                   "by up to F x the box size, drawn from --seed per (video, frame, tube). 0: off.")
@click.option("--gt-jitter-copies", default=1, show_default=True, type=click.IntRange(min=1),
              help="jhmdb/ucf24: jittered copies per GT box (with --gt-jitter).")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of videos (any container PyAV reads; id = file stem) or PySlowFast frame "
                   "folders frames/<video>/<video>_%06d.jpg.")
@click.option("--label-map", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Label map pbtxt; the store's label columns follow its order.")
@click.option("--dataset", default="ava", show_default=True,
              help="Dataset name for the default output path; jhmdb / ucf24 read --annotations as the ACT GT "
                   "pickle (JHMDB-GT.pkl / UCF101v2-GT.pkl, label map from it) and --videos as the dataset root "
                   "(Frames/ or rgb-images/ frame folders, or <class>/<clip>.<ext> videos).")
@click.option("--out", default=None, show_default="cache/<dataset>/<split>.zarr", help="Feature store path.")
@click.option("--annotations", default=None, type=click.Path(exists=True, dir_okay=False),
              help="GT annotation CSV (stored as is_gt rows with multi-hot labels and person ids).")
@click.option("--proposals", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Person proposals (CSV / MMAction2 .pkl / COCO .json), stored with raw scores.")
@click.option("--person-detector", default="precomputed", show_default=True,
              help="precomputed (the --proposals file) | torchvision | detectron2 (run on each keyframe frame).")
@click.option("--person-detector-args", "person_detector_kwargs", default="", callback=_json_dict,
              show_default=True, help="JSON object of keyword arguments for the person detector.")
@click.option("--objects", default="none", show_default=True,
              help="none | precomputed (--objects-file CSV) | an object detector name (extract.detectors).")
@click.option("--objects-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Objects CSV video,timestamp,x1,y1,x2,y2,class_id,score for --objects precomputed.")
@click.option("--object-classes", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Text file of object class names, one per line in class-id order (--objects precomputed).")
@click.option("--object-detector-args", "object_detector_kwargs", default="", callback=_json_dict,
              show_default=True, help="JSON object of keyword arguments for the object detector.")
@click.option("--min-proposal-score", default=0.0, show_default=True, type=float,
              help="Drop proposals below this score at extraction (scores are stored raw; thresholds such "
                   "as SlowFast's 0.9 train / 0.8 test are applied at training time).")
@click.option("--transfer-labels/--no-transfer-labels", default=True, show_default=True,
              help="Copy GT labels to proposals overlapping a GT box (SlowFast/LFB convention).")
@click.option("--label-iou", default=0.9, show_default=True, type=float,
              help="IoU for label transfer (SlowFast/LFB: 0.9; STAGE's I3D setting: 0.5).")
@click.option("--backbone", default="slowfast_r50", show_default=True, callback=_backbone,
              help=f"Backbone: {', '.join(sorted(BACKBONES))}.")
@click.option("--group", default=None, show_default="the backbone name", help="Store group for the features.")
@click.option("--checkpoint", default=None, type=click.Path(exists=True, dir_okay=False),
              help="pytorchvideo hub file, PySlowFast .pyth or Caffe2 .pkl checkpoint.")
@click.option("--random-init", is_flag=True, default=False, show_default=True,
              help="Random weights (tests/demo only; warns on every run and is recorded in the store).")
@click.option("--allow-partial-checkpoint", is_flag=True, default=False, show_default=True,
              help="Load the matching keys of a checkpoint with missing/unexpected keys instead of failing.")
@click.option("--trust-pickle", is_flag=True, default=False, show_default=True,
              help="Load the --proposals pickle, the --annotations GT pickle (jhmdb/ucf24) and --checkpoint "
                   "with full unpickling (can run code in the file: only for files you trust). Default: plain "
                   "data only, anything else is refused.")
@click.option("--res5-dilation/--no-res5-dilation", default=False, show_default=True,
              help="res5 spatial stride 1 with dilation 2 (output stride 16, as the AVA papers).")
@click.option("--backbone-args", "backbone_kwargs", default="", callback=_json_dict, show_default=True,
              help="JSON object of pytorchvideo constructor overrides (e.g. tiny test configs).")
@click.option("--sampling-args", "sampling_overrides", default="", callback=_json_dict, show_default=True,
              help="JSON object overriding the published clip sampling (frames, rate, alpha, short_side, ...).")
@click.option("--save", default="", callback=_levels, show_default=True,
              help=f"Extra levels, comma separated: {','.join(LEVELS)}.")
@click.option("--context-grid", default=None, type=int, show_default=True,
              help="Adaptive-avg-pool the context map to N x N (default: full map).")
@click.option("--roi-resolution", default=7, show_default=True, type=int, help="RoIAlign output size.")
@click.option("--roi-aligned/--no-roi-aligned", default=True, show_default=True,
              help="RoIAlign aligned=True (PySlowFast); pytorchvideo's own head uses False.")
@click.option("--time-offset", default=None, type=float, show_default="0 for video files, 900 for frame folders",
              help="video_time = annotation timestamp - offset (AVA trimmed 15-min clips: 900; full movies: 0).")
@click.option("--kinetics-names", is_flag=True, default=False, show_default=True,
              help="AVA-Kinetics: files <id>_<start>_<end>.* map to video <id> with offset <start>.")
@click.option("--fps", default=None, type=float, show_default="30; ucf24: 25",
              help="Frame grid of the clip sampling (jhmdb/ucf24: also timestamp = (frame - 1) / fps).")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Clips per backbone batch.")
@click.option("--num-workers", default=2, show_default=True, type=int, help="Decoding threads (0: inline).")
@click.option("--device", default="cuda", show_default=True,
              help="Torch device; under torchrun cuda picks LOCAL_RANK.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Autocast on GPU.")
@click.option("--shard", default=None, show_default="RANK/WORLD_SIZE from torchrun, else 0/1",
              help="i/n: this process does videos i, i+n, ... of the sorted list.")
@click.option("--allow-config-mismatch", is_flag=True, default=False, show_default=True,
              help="Write into a group whose stored configuration differs.")
@click.option("--flush-mb", default=64, show_default=True, type=int, help="Store flush threshold (MiB).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed (random-init weights, --gt-jitter draws).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="tqdm progress bar.")
@click.option("--limit-videos", default=None, type=int, show_default=True, help="Only the first N videos.")
def features_cmd(**kw):
    """Backbone RoI features of every actor box into the feature store (resumable, sharded)."""
    from stagecache.extract.datasets import TUBE_DATASETS
    from stagecache.extract.datasets.tubes_pkl import split_name
    from stagecache.extract.features import ExtractArgs, run_extract


    side, tube = kw.pop("side"), TUBE_DATASETS.get(kw["dataset"])
    if tube is not None:  # JHMDB-21 / UCF101-24 (extract/datasets/tubes_pkl.py)
        if kw["annotations"] is None:
            raise click.UsageError(f"--dataset {kw['dataset']} needs --annotations <GT pickle>")
        if kw["split"].isdigit() and side is None:  # an option missing: click's usage error (exit 2)
            raise click.UsageError("--split N needs --side train|test")
        kw["split"] = split_name(kw["split"], side)  # a bad name: TubeFormatError, one line (exit 1)
        kw["fps"] = tube.fps if kw["fps"] is None else kw["fps"]
    else:
        if kw["label_map"] is None:
            raise click.UsageError("Missing option '--label-map'.")
        if kw["frame_stride"] is not None or side is not None or kw["gt_jitter"]:
            raise click.UsageError("--frame-stride, --side and --gt-jitter are for --dataset jhmdb / ucf24")
        kw["fps"] = 30.0 if kw["fps"] is None else kw["fps"]
    try:
        args = ExtractArgs(**kw)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    summary = run_extract(args)
    if summary["failed"]:
        raise SystemExit(1)


@extract_cli.command("tracks")
@click.option("--store", "store", required=True, help="Store whose base boxes are linked into tracks.")
@click.option("--iou-threshold", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="Smallest IoU for a box to continue a track.")
@click.option("--max-gap", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds a track may skip (1 = consecutive AVA keyframes).")
@click.option("--separate-gt/--mixed", default=True, show_default=True,
              help="Track ground-truth rows and detector rows independently.")
def tracks_cmd(store, iou_threshold, max_gap, separate_gt):
    """Link person boxes across keyframes (IoU + Hungarian) and write the store's `tracks` group.

    Heads that need identities (igmn) read it instead of base/actor_track, which holds only the
    annotation's person ids (-1 on detector boxes)."""
    from stagecache.extract.store import StoreError
    from stagecache.extract.tracking import write_tracks

    try:
        ids = write_tracks(store, iou_threshold=iou_threshold, max_gap=max_gap, separate_gt=separate_gt)
    except (StoreError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e) if store in str(e) else f"{store}: {e}") from None
    n = int(ids.max() + 1) if ids.size else 0
    click.echo(f"{store}: {ids.size} boxes linked into {n} tracks (group 'tracks')")
