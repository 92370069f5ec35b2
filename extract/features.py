"""The `extract features` job: backbone features of every actor box into the feature store.

For each video (sorted; this rank's share under `--shard i/n` or torchrun's RANK/WORLD_SIZE):
  rows    the `base` group rows: from the annotation/proposal/object files (or a person/object
          detector on the keyframe frame), or read back from the store when `base` is already
          committed for that video (a second backbone aligns with the first one's boxes);
  clips   decoded in background threads around each keyframe (extract.video, extract.clip_loader);
  feats   backbone maps -> RoI pooling (extract.roi) -> `actor_pooled` (+ roi, temporal, context);
  write   StoreWriter.add_groups(video, {base, <group>}): one commit unit, so a video is done in
          both groups or in neither; a rerun redoes every video some group lacks, writing only
          the groups that lack it (per-video steps: extract/features_video.py).

A video that cannot be read fails alone (its message names it); the run goes on, the summary
lists it and the command exits 1. Keyframes outside a video (before its start or past its end at
the video's time offset) are dropped with a warning and listed in the summary; a video that loses
every keyframe fails alone with the cause and the likely fix (e.g. `--time-offset 900`), and when no
video is left, or there is no keyframe at all, the run stops before loading the model
(`EmptyExtractionError`). The store records the options that change what it holds and a resume must
give the same ones, or `--restart` (extract/features_record.py). The arguments, `ExtractArgs`, are
validated in extract/features_args.py.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stagecache.core.errors import UserError
from stagecache.extract import ava_io
from stagecache.extract.actors import KeyframeRows, RowBuilder, rows_from_tables
from stagecache.extract.backbones import VideoBackbone, build_backbone
from stagecache.extract.random_init import warn_random_init
from stagecache.extract.clip_loader import Unit, iterate_units
from stagecache.extract.datasets import TUBE_DATASETS, tube_inputs
from stagecache.extract.datasets.ava_kinetics import (check_clip_spans, kinetics_keyframe_proposals,
                                                      read_kinetics_annotations, subset_rows, write_failed_list)
from stagecache.extract.datasets.multisports import read_multisports_boxes
from stagecache.extract.datasets.tube_boxes import concat_proposals
from stagecache.extract.features_args import ExtractArgs, parse_shard  # ExtractArgs: also imported from here
from stagecache.extract.features_video import Detect, Pooling, finish_video, process_unit
from stagecache.extract.features_record import (BASE, FEATURES, EmptyExtractionError, StoreState, check_options,
                                                drop_videos_outside, nothing_to_extract, option_record,
                                                outside_message, restart_groups, write_side_file)
from stagecache.extract.store import Location
from stagecache.extract.video import find_videos
from stagecache.extract.vit.specs import layer_group, parse_layers, resolve_layers

SUMMARY_KEYS = ("videos", "done", "skipped", "failed", "keyframes", "boxes", "objects", "bytes_written")


def resolve_rank(shard: str | None) -> tuple[int, int]:
    """(rank, world): --shard wins, else torchrun's RANK / WORLD_SIZE, else (0, 1)."""
    if shard is not None:
        return parse_shard(shard)
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_videos(videos: list[str], rank: int, world: int) -> list[str]:
    """Video i of the sorted list goes to rank i % world."""
    return [v for i, v in enumerate(sorted(videos)) if i % world == rank]


def _device(args: ExtractArgs) -> torch.device:
    dev = torch.device(args.device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def _dir_bytes(path: str) -> int:
    return sum(size for _, size in Location(path).files())


def _group_attrs(args: ExtractArgs, bb: VideoBackbone, ckpt_format: str | None) -> dict:
    return {**option_record(args)[FEATURES], **bb.metadata(), "kind": "backbone", "checkpoint_format": ckpt_format,
            "levels": sorted(args.save), "pooling": "temporal mean per pathway, concat, RoIAlign, spatial max"}


def _base_attrs(args: ExtractArgs) -> dict:
    return {"kind": "boxes", **option_record(args)[BASE], **({"gt_jitter_seed": args.seed} if args.gt_jitter else {})}


def _object_classes(args: ExtractArgs, detect: Detect) -> list[str] | None:
    """Object class names for the store: the detector's, or --object-classes for precomputed objects."""
    if detect.objects is not None:
        return list(detect.objects.class_names) or None
    if args.objects == "precomputed" and args.object_classes:
        names = [l.strip() for l in Path(args.object_classes).read_text().splitlines() if l.strip()]
        return names or None
    return None


def _log(msg: str) -> None:
    try:  # above a live progress bar, not inside its line
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        print(msg, file=sys.stderr, flush=True)
        return
    tqdm.write(msg, file=sys.stderr)


def _step(args: ExtractArgs, msg: str) -> None:
    """A long step the progress bar does not cover (with the bar: --no-progress hides both)."""
    if args.progress:
        _log(f"extract features: {msg}")


def run_extract(args: ExtractArgs) -> dict:
    """Run the job; returns the summary dict (see SUMMARY_KEYS). Failed videos do not raise; an
    extraction that would store nothing, or a resume with other options, raises (a UserError)."""
    from stagecache.extract.store import StoreWriter, estimate_bytes, format_bytes, open_store

    t_start = time.time()
    torch.manual_seed(args.seed)
    rank, world = resolve_rank(args.shard)
    device = _device(args)
    if args.restart and world > 1:
        raise UserError("--restart runs in one process (--executor local / slurm restarts once, before the array)")
    tubes = None
    if args.dataset in TUBE_DATASETS:  # JHMDB-21 / UCF101-24: label map, GT rows and videos from the GT pickle
        tubes = tube_inputs(args.dataset, args.annotations, args.split, args.videos, fps=args.fps,
                            frame_stride=args.frame_stride, trust=args.trust_pickle, gt_jitter=args.gt_jitter,
                            gt_jitter_copies=args.gt_jitter_copies, seed=args.seed)
        label_map, ann = tubes.label_map, tubes.annotations
    else:
        label_map = ava_io.read_label_map(args.label_map)
        ann = ava_io.read_annotations(args.annotations, label_map) if args.annotations else None
    kinetics = subset_videos = None
    if args.dataset == "ava-kinetics":  # AVA + Kinetics rows, one --subset (extract/datasets/ava_kinetics.py)
        if args.kinetics_annotations:
            kinetics = read_kinetics_annotations(args.kinetics_annotations, label_map)
        ann, subset_videos = subset_rows(ann, kinetics, args.subset)
    if args.dataset == "multisports" and args.proposals:  # its person-box pickle, keyed by clip and frame
        props = read_multisports_boxes(args.proposals, list(tubes.videos), fps=tubes.fps, trust=args.trust_pickle,
                                       keyframes=tubes.annotations)
    else:
        props = ava_io.read_proposals(args.proposals, trust_pickle=args.trust_pickle) if args.proposals else None
    if kinetics is not None and props is not None:  # a Kinetics clip's proposals at its keyframe only
        props = kinetics_keyframe_proposals(props, kinetics)
    if tubes is not None and tubes.proposals is not None:  # jittered GT copies after the file's proposals
        props = concat_proposals(props, tubes.proposals)
    objs = ava_io.read_objects(args.objects_file) if args.objects == "precomputed" else None
    rows = RowBuilder(label_ids=label_map.ids, annotations=ann, proposals=props, objects=objs,
                      min_proposal_score=args.min_proposal_score, transfer_labels=args.transfer_labels,
                      label_iou=args.label_iou)

    # Everything that can refuse the run comes before the model is loaded and anything is written.
    group = args.group
    state = StoreState.read(args.out)
    drop = [] if args.allow_config_mismatch else check_options(args, state, group)  # --restart drops these
    if group in drop:  # its --layers groups start over with it
        drop += [g for g in state.done if g.startswith(layer_group(group, ""))]
    done_group = set() if group in drop else state.done.get(group, set())
    done_base = set() if "base" in drop else state.done.get("base", set())
    detectors = args.person_detector != "precomputed" or args.objects not in ("none", "precomputed")
    available = tubes.videos if tubes is not None else find_videos(args.videos, kinetics_names=args.kinetics_names)
    wanted = sorted(rows.videos()) if args.person_detector == "precomputed" else sorted(available)
    if subset_videos is not None:
        wanted = [v for v in wanted if v in subset_videos]
        if kinetics is not None and args.subset != "ava":
            check_clip_spans(kinetics, available, args.kinetics_annotations)
    if not wanted:
        raise nothing_to_extract(args, args.person_detector != "precomputed")
    mine = shard_videos(wanted, rank, world)
    if args.limit_videos is not None:
        mine = mine[: args.limit_videos]
    # A video is done only when every group this job writes holds it (base and the backbone group
    # are committed as one unit; a store of an older stagecache may hold either alone).
    todo = [v for v in mine if v not in done_group or v not in done_base]
    summary = {"videos": len(mine), "done": 0, "skipped": len(mine) - len(todo), "failed": [],
               "missing_videos": [], "keyframes": 0, "boxes": 0, "objects": 0, "keyframes_past_end": [],
               "bytes_written": 0, "store": args.out, "group": group, "rank": rank, "world": world,
               "random_init": bool(args.random_init)}
    stored_base = None
    if any(v in done_base for v in todo):
        _step(args, f"reading the stored boxes of {sum(v in done_base for v in todo)} video(s)")
        stored_base = open_store(args.out).load(select={"base": None})

    # rows per video (known up front unless a person / object detector runs per keyframe)
    plan: dict[str, KeyframeRows | None] = {}
    keys_of: dict[str, list[int]] = {}
    ts_of: dict[str, np.ndarray] = {}  # keyframe timestamps (annotation time), in keys_of order
    for v in list(todo):
        if v not in available:
            summary["missing_videos"].append(v)
            summary["failed"].append({"video": v, "error": f"video {v!r} not found under {args.videos}"})
            todo.remove(v)
            continue
        if v in done_base:
            plan[v] = rows_from_tables(stored_base, v)
        elif not detectors:
            plan[v] = rows.build(v)
        else:
            plan[v] = None
            stamps = rows.timestamps(v)  # keyframe key -> timestamp
            keys_of[v] = sorted(stamps)
            ts_of[v] = np.array([stamps[k] for k in keys_of[v]], np.float64)
        if plan[v] is not None:
            ts_of[v] = plan[v].timestamps
            keys_of[v] = [ava_io.timestamp_key(t) for t in ts_of[v]]
    if summary["missing_videos"] and not todo and not summary["skipped"]:
        found = sorted(available)
        raise EmptyExtractionError(
            f"none of the {len(summary['missing_videos'])} video(s) to extract (e.g. {summary['missing_videos'][0]!r}) "
            f"is under --videos {args.videos}, which holds {len(found)}{': ' + ', '.join(found[:3]) if found else ''}")
    offsets = {v: (available[v][1] if available[v][1] is not None else
                   (args.time_offset if args.time_offset is not None else
                    (900.0 if available[v][0].is_dir() else 0.0))) for v in todo}
    drop_videos_outside(todo, ts_of, available, offsets, args.fps, summary)

    _step(args, f"loading backbone {args.backbone} "
                f"({'random init' if args.random_init else Path(args.checkpoint).name}) on {device}")
    bb = build_backbone(args.backbone, res5_dilation=args.res5_dilation,
                        sampling_overrides=args.sampling_overrides or None, **args.backbone_kwargs)
    ckpt_format = None
    if args.random_init:
        warn_random_init(f"backbone {args.backbone!r}", stacklevel=1)
        _log(f"WARNING: backbone {args.backbone} is RANDOMLY INITIALISED (--random-init); the features "
             "are for tests and the demo only")
    else:
        report = bb.load_weights(args.checkpoint, allow_partial=args.allow_partial_checkpoint,
                                 trust_pickle=args.trust_pickle)
        ckpt_format = report.format
        if not report.complete:
            _log(f"WARNING: partial checkpoint load: {report.describe()}")
    bb = bb.to(device).eval()
    s = bb.sampling
    layers = resolve_layers(parse_layers(args.layers), bb.num_layers, args.backbone)
    detect = Detect(args.person_detector, args.person_detector_kwargs, args.objects, args.object_detector_kwargs,
                    device)
    if drop:
        restart_groups(args.out, drop, log=_log)
    writer = StoreWriter(args.out, split=args.split, label_ids=label_map.ids, label_names=label_map.names,
                         object_classes=_object_classes(args, detect), rank=rank, flush_bytes=args.flush_mb << 20)
    bar = None
    try:  # the rank lock must not outlive a failed run (in-process callers, tests)
        # A group without committed data binds nothing: its record is the options of this run.
        writer.declare_group(group, state.comparable(group, _group_attrs(args, bb, ckpt_format), not done_group),
                             allow_mismatch=args.allow_config_mismatch, replace=not done_group)
        for n in layers:  # --layers: one group per block, committed with `group` (same done set)
            writer.declare_group(layer_group(group, n), {**_group_attrs(args, bb, ckpt_format), "layer": n,
                                                         "layer_of": group, "levels": []},
                                 allow_mismatch=args.allow_config_mismatch, replace=not done_group)
        if any(v not in done_base for v in todo):
            base_free = not any(v for g, v in state.done.items() if g not in drop)
            writer.declare_group("base", state.comparable("base", _base_attrs(args), base_free),
                                 allow_mismatch=args.allow_config_mismatch, replace=base_free)
        write_side_file(args, None, rank)  # what the store now records, before any data

        n_kf = sum(len(keys_of[v]) for v in todo)
        known = [plan[v] for v in todo if plan[v] is not None]
        a_per = float(np.mean([r.actor_counts.mean() for r in known if len(r.actor_counts)] or [10.0]))
        o_per = float(np.mean([r.object_counts.mean() for r in known if len(r.object_counts)] or [0.0]))
        levels_shape = _level_shapes(args, bb)
        est = estimate_bytes(n_kf, a_per, o_per, num_labels=len(label_map.ids), pooled_dim=bb.out_channels,
                             include_base=any(v not in done_base for v in todo), **levels_shape)
        _log(f"extract features: rank {rank}/{world}, {len(todo)} videos to do ({summary['skipped']} already "
             f"committed), {n_kf} keyframes, ~{a_per:.1f} boxes/keyframe; estimated size {format_bytes(est)} "
             f"(uncompressed) -> {args.out} [{group}]")

        bytes_before = _dir_bytes(args.out) if Path(args.out).exists() else 0

        def units():
            for v in todo:
                ts = ts_of[v]
                for i in range(0, len(ts), args.batch_size):
                    idx = np.arange(i, min(i + args.batch_size, len(ts)))
                    yield Unit(v, available[v][0], offsets[v], ts[idx], idx, last=idx[-1] == len(ts) - 1)

        # The bar counts a video's keyframes when the store commits it (decoding, forward pass and
        # write all behind it); `processed` counts them after the forward pass.
        bar = _progress_bar(args, n_kf, group, rank)
        pending: set[str] = set()  # finished videos the writer has not committed yet

        def committed(videos):
            pending.difference_update(videos)
            if bar is not None:
                bar.update(sum(len(keys_of[v]) for v in videos if v in keys_of))

        writer.on_commit = committed
        state_of: dict[str, dict] = {}
        n_clips, n_processed, t_model = 0, 0, 0.0
        read_kw = dict(num_frames=s.read_frames, rate=s.read_rate, fps=args.fps, short_side=s.short_side,
                       square=s.square)
        autocast = device.type == "cuda" and args.amp
        pooling = Pooling(levels=tuple(args.save), resolution=args.roi_resolution, context_grid=args.context_grid,
                          aligned=args.roi_aligned if bb.roi_aligned is None else bb.roi_aligned,
                          box_extend=bb.box_extend, layers=layers)
        t_loop = time.perf_counter()
        for res in iterate_units(units(), num_workers=args.num_workers, **read_kw):
            v, u = res.unit.video, res.unit
            st = state_of.setdefault(v, {"inside": [], "feats": [], "people": {}, "objs": {}, "failed": None,
                                         "channels": bb.out_channels, "frames": bb.map_frames,
                                         "context_shape": levels_shape.get("context_shape", (0, 0, 0))})
            if st["failed"] is None and res.error is not None:
                st["failed"] = res.error
            if st["failed"] is None:
                try:
                    t0 = time.perf_counter()
                    process_unit(res, st, plan[v], keys_of[v], rows, bb, detect, pooling, device, autocast)
                    t_model += time.perf_counter() - t0
                    n_clips += int(res.inside.sum())
                except Exception as e:  # a bad video must not stop the run
                    st["failed"] = f"video {v}: {type(e).__name__}: {e}"
            n_processed += len(u.timestamps)
            if bar is not None:
                bar.set_postfix(processed=n_processed, clips_per_s=f"{n_clips / max(time.perf_counter() - t_loop, 1e-9):.1f}")
            if u.last:
                st = state_of.pop(v)
                inside = np.concatenate(st["inside"]) if st["inside"] else np.zeros(0, bool)
                if st["failed"] is None and len(inside) and not inside.any():  # the duration probe could not tell
                    st["failed"] = outside_message(v, ts_of[v], offsets[v], res.duration)
                if st["failed"] is not None:
                    _log(f"FAILED: {st['failed']}")
                    summary["failed"].append({"video": v, "error": st["failed"]})
                    if bar is not None:
                        bar.total -= len(keys_of[v])
                        bar.refresh()
                    continue
                pending.add(v)
                finish_video(v, st, plan[v], keys_of[v], rows, writer, group, done_base, done_group, summary, pooling)
        if pending:
            _step(args, f"committing the last {len(pending)} video(s) to the store")
        writer.close()
    except BaseException:
        writer.close_quietly()
        raise
    finally:
        if bar is not None:
            bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    loop_s = time.perf_counter() - t_loop
    summary["bytes_written"] = (_dir_bytes(args.out) - bytes_before) if Path(args.out).exists() else 0
    summary["seconds"] = round(time.time() - t_start, 3)
    summary["clips"] = n_clips
    summary["loop_seconds"] = round(loop_s, 3)  # decoding + backbone + pooling + writing
    summary["clips_per_s"] = round(n_clips / max(loop_s, 1e-9), 3)
    summary.update(bb.run_info())  # ViTs: the token grids seen, whether positions were interpolated
    write_side_file(args, summary, rank)
    write_failed_list(args.out, args.group, rank, summary["failed"])  # missing / unreadable videos, one file
    _print_summary(summary)
    return summary


def _progress_bar(args: ExtractArgs, total: int, group: str, rank: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, unit="kf", disable=not args.progress, dynamic_ncols=True, desc=f"{group} r{rank} committed")


def _level_shapes(args: ExtractArgs, bb: VideoBackbone) -> dict:
    c, r = bb.out_channels, args.roi_resolution
    out = {}
    if "roi" in args.save:
        out["roi_shape"] = (c, r, r)
    if "temporal" in args.save:
        out["temporal_shape"] = (bb.map_frames, c)
    if "context" in args.save:
        g = args.context_grid
        if g is None:  # full map: frame size / stride, AVA-like 256 x 341 frames
            ss = bb.sampling.short_side
            g_hw = (-(-ss // bb.stride), -(-int(ss * 4 / 3) // bb.stride))
        else:
            g_hw = (g, g)
        out["context_shape"] = (c, *g_hw)
    return out


def _print_summary(s: dict) -> None:
    from stagecache.extract.store import format_bytes
    msg = (f"extract features [{s['group']}] rank {s['rank']}/{s['world']}: videos {s['videos']} "
           f"(done {s['done']}, skipped {s['skipped']}, failed {len(s['failed'])}); keyframes {s['keyframes']}; "
           f"boxes {s['boxes']}; objects {s['objects']}; written {format_bytes(s['bytes_written'])}; "
           f"{s.get('clips_per_s', 0)} clips/s")
    print(msg, file=sys.stderr)
    for f in s["failed"]:
        print(f"  failed: {f['error']}", file=sys.stderr)
    for p in s["keyframes_past_end"]:
        print(f"  keyframes past the end of {p['video']}: {len(p['timestamps'])}", file=sys.stderr)
    if s.get("random_init"):
        print("  WARNING: RANDOM-INIT backbone: features are meaningless outside tests/demo", file=sys.stderr)
