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

A video that cannot be read fails alone (its message names it); the run goes on and the summary
lists it. Keyframes past the end of a video are dropped and listed in the summary. The arguments,
`ExtractArgs`, are validated in extract/features_args.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from stagecache.extract import ava_io
from stagecache.extract.actors import KeyframeRows, RowBuilder, rows_from_tables
from stagecache.extract.backbones import VideoBackbone, build_backbone
from stagecache.extract.random_init import warn_random_init
from stagecache.extract.checkpoints import load_checkpoint
from stagecache.extract.clip_loader import Unit, iterate_units
from stagecache.extract.datasets import TUBE_DATASETS, tube_inputs
from stagecache.extract.datasets.tube_boxes import concat_proposals
from stagecache.extract.features_args import ExtractArgs, parse_shard  # ExtractArgs: also imported from here
from stagecache.extract.features_video import Detect, Pooling, finish_video, process_unit
from stagecache.extract.store import Location
from stagecache.extract.video import find_videos

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
    return {**bb.metadata(), "kind": "backbone",
            "checkpoint": None if args.checkpoint is None else Path(args.checkpoint).name,
            "checkpoint_format": ckpt_format, "random_init": bool(args.random_init),
            "res5_dilation": bool(args.res5_dilation), "roi_resolution": args.roi_resolution,
            "roi_aligned": args.roi_aligned, "levels": sorted(args.save), "context_grid": args.context_grid,
            "pooling": "temporal mean per pathway, concat, RoIAlign, spatial max"}


def _base_attrs(args: ExtractArgs) -> dict:
    name = lambda p: None if p is None else Path(p).name  # noqa: E731
    return {"kind": "boxes", "annotations": name(args.annotations), "proposals": name(args.proposals),
            "person_detector": args.person_detector, "objects": args.objects,
            "objects_file": name(args.objects_file), "min_proposal_score": args.min_proposal_score,
            "transfer_labels": args.transfer_labels, "label_iou": args.label_iou, "fps": args.fps,
            "time_offset": args.time_offset,
            **({"gt_jitter": args.gt_jitter, "gt_jitter_copies": args.gt_jitter_copies, "gt_jitter_seed": args.seed}
               if args.gt_jitter else {})}


def _object_classes(args: ExtractArgs, detect: Detect) -> list[str] | None:
    """Object class names for the store: the detector's, or --object-classes for precomputed objects."""
    if detect.objects is not None:
        return list(detect.objects.class_names) or None
    if args.objects == "precomputed" and args.object_classes:
        names = [l.strip() for l in Path(args.object_classes).read_text().splitlines() if l.strip()]
        return names or None
    return None


def run_extract(args: ExtractArgs) -> dict:
    """Run the job; returns the summary dict (see SUMMARY_KEYS). Failed videos do not raise."""
    from stagecache.extract.store import StoreWriter, estimate_bytes, format_bytes, open_store

    t_start = time.time()
    torch.manual_seed(args.seed)
    rank, world = resolve_rank(args.shard)
    device = _device(args)
    tubes = None
    if args.dataset in TUBE_DATASETS:  # JHMDB-21 / UCF101-24: label map, GT rows and videos from the GT pickle
        tubes = tube_inputs(args.dataset, args.annotations, args.split, args.videos, fps=args.fps,
                            frame_stride=args.frame_stride, trust=args.trust_pickle, gt_jitter=args.gt_jitter,
                            gt_jitter_copies=args.gt_jitter_copies, seed=args.seed)
        label_map, ann = tubes.label_map, tubes.annotations
    else:
        label_map = ava_io.read_label_map(args.label_map)
        ann = ava_io.read_annotations(args.annotations, label_map) if args.annotations else None
    props = ava_io.read_proposals(args.proposals, trust_pickle=args.trust_pickle) if args.proposals else None
    if tubes is not None and tubes.proposals is not None:  # jittered GT copies after the file's proposals
        props = concat_proposals(props, tubes.proposals)
    objs = ava_io.read_objects(args.objects_file) if args.objects == "precomputed" else None
    rows = RowBuilder(label_ids=label_map.ids, annotations=ann, proposals=props, objects=objs,
                      min_proposal_score=args.min_proposal_score, transfer_labels=args.transfer_labels,
                      label_iou=args.label_iou)

    bb = build_backbone(args.backbone, res5_dilation=args.res5_dilation,
                        sampling_overrides=args.sampling_overrides or None, **args.backbone_kwargs)
    ckpt_format = None
    if args.random_init:
        warn_random_init(f"backbone {args.backbone!r}", stacklevel=1)
        print(f"WARNING: backbone {args.backbone} is RANDOMLY INITIALISED (--random-init); the features "
              "are for tests and the demo only", file=sys.stderr)
    else:
        report = load_checkpoint(bb.net, args.checkpoint, allow_partial=args.allow_partial_checkpoint,
                                 trust_pickle=args.trust_pickle)
        ckpt_format = report.format
        if not report.complete:
            print(f"WARNING: partial checkpoint load: {report.describe()}", file=sys.stderr)
    bb = bb.to(device).eval()
    s = bb.sampling

    available = tubes.videos if tubes is not None else find_videos(args.videos, kinetics_names=args.kinetics_names)
    wanted = sorted(rows.videos()) if args.person_detector == "precomputed" else sorted(available)
    mine = shard_videos(wanted, rank, world)
    if args.limit_videos is not None:
        mine = mine[: args.limit_videos]

    detect = Detect(args.person_detector, args.person_detector_kwargs, args.objects, args.object_detector_kwargs,
                    device)
    writer = StoreWriter(args.out, split=args.split, label_ids=label_map.ids, label_names=label_map.names,
                         object_classes=_object_classes(args, detect), rank=rank, flush_bytes=args.flush_mb << 20)
    try:  # the rank lock must not outlive a failed run (in-process callers, tests)
        group = args.group
        writer.declare_group(group, _group_attrs(args, bb, ckpt_format), allow_mismatch=args.allow_config_mismatch)
        done_group, done_base = writer.done(group), writer.done("base")
        # A video is done only when every group this job writes holds it (base and the backbone group
        # are committed as one unit; a store of an older stagecache may hold either alone).
        todo = [v for v in mine if v not in done_group or v not in done_base]
        summary = {"videos": len(mine), "done": 0, "skipped": len(mine) - len(todo), "failed": [],
                   "missing_videos": [], "keyframes": 0, "boxes": 0, "objects": 0, "keyframes_past_end": [],
                   "bytes_written": 0, "store": args.out, "group": group, "rank": rank, "world": world,
                   "random_init": bool(args.random_init)}
        if any(v not in done_base for v in todo):
            writer.declare_group("base", _base_attrs(args), allow_mismatch=args.allow_config_mismatch)
        stored_base = None
        if any(v in done_base for v in todo):
            stored_base = open_store(args.out).load(select={"base": None})

        # rows per video (known up front unless a person / object detector runs per keyframe)
        plan: dict[str, KeyframeRows | None] = {}
        keys_of: dict[str, list[int]] = {}
        stamps_of: dict[str, dict] = {}  # detector videos: keyframe key -> timestamp
        for v in list(todo):
            if v not in available:
                summary["missing_videos"].append(v)
                summary["failed"].append({"video": v, "error": f"video {v!r} not found under {args.videos}"})
                todo.remove(v)
                continue
            if v in done_base:
                plan[v] = rows_from_tables(stored_base, v)
                keys_of[v] = [ava_io.timestamp_key(t) for t in plan[v].timestamps]
            elif detect.person is None and detect.objects is None:
                plan[v] = rows.build(v)
                keys_of[v] = [ava_io.timestamp_key(t) for t in plan[v].timestamps]
            else:
                stamps_of[v] = rows.timestamps(v)
                keys_of[v] = sorted(stamps_of[v])
                plan[v] = None
        n_kf = sum(len(k) for k in keys_of.values())
        known = [r for r in plan.values() if r is not None]
        a_per = float(np.mean([r.actor_counts.mean() for r in known if len(r.actor_counts)] or [10.0]))
        o_per = float(np.mean([r.object_counts.mean() for r in known if len(r.object_counts)] or [0.0]))
        levels_shape = _level_shapes(args, bb)
        est = estimate_bytes(n_kf, a_per, o_per, num_labels=len(label_map.ids), pooled_dim=bb.out_channels,
                             include_base=any(v not in done_base for v in todo), **levels_shape)
        print(f"extract features: rank {rank}/{world}, {len(todo)} videos to do ({summary['skipped']} already "
              f"committed), {n_kf} keyframes, ~{a_per:.1f} boxes/keyframe; estimated size {format_bytes(est)} "
              f"(uncompressed) -> {args.out} [{group}]", file=sys.stderr)

        bytes_before = _dir_bytes(args.out) if Path(args.out).exists() else 0
        offsets = {v: (available[v][1] if available[v][1] is not None else
                       (args.time_offset if args.time_offset is not None else
                        (900.0 if available[v][0].is_dir() else 0.0))) for v in todo}

        def units():
            for v in todo:
                if plan[v] is not None:
                    ts = plan[v].timestamps
                else:
                    ts = np.array([stamps_of[v][k] for k in keys_of[v]], np.float64)
                for i in range(0, len(ts), args.batch_size):
                    idx = np.arange(i, min(i + args.batch_size, len(ts)))
                    yield Unit(v, available[v][0], offsets[v], ts[idx], idx, last=idx[-1] == len(ts) - 1)

        try:
            from tqdm import tqdm
            bar = tqdm(total=n_kf, unit="clip", disable=not args.progress, dynamic_ncols=True,
                       desc=f"{group} r{rank}")
        except ImportError:  # pragma: no cover
            bar = None
        state: dict[str, dict] = {}
        n_clips, t_model = 0, 0.0
        read_kw = dict(num_frames=s.read_frames, rate=s.read_rate, fps=args.fps, short_side=s.short_side,
                       square=s.square)
        autocast = device.type == "cuda" and args.amp
        pooling = Pooling(levels=tuple(args.save), resolution=args.roi_resolution, aligned=args.roi_aligned,
                          context_grid=args.context_grid)
        t_loop = time.perf_counter()
        for res in iterate_units(units(), num_workers=args.num_workers, **read_kw):
            v, u = res.unit.video, res.unit
            st = state.setdefault(v, {"inside": [], "feats": [], "people": {}, "objs": {}, "failed": None,
                                       "channels": bb.out_channels, "frames": s.frames,
                                       "context_shape": levels_shape.get("context_shape", (0, 0, 0))})
            if bar is not None:
                bar.update(len(u.timestamps))
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
            if bar is not None and t_model > 0:
                bar.set_postfix(clips_per_s=f"{bar.n / max(bar.format_dict['elapsed'], 1e-9):.1f}")
            if u.last:
                st = state.pop(v)
                if st["failed"] is not None:
                    print(f"FAILED: {st['failed']}", file=sys.stderr)
                    summary["failed"].append({"video": v, "error": st["failed"]})
                    continue
                finish_video(v, st, plan[v], keys_of[v], rows, writer, group, done_base, done_group, summary, pooling)
        if bar is not None:
            bar.close()
    except BaseException:
        writer.close_quietly()
        raise
    writer.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    loop_s = time.perf_counter() - t_loop
    summary["bytes_written"] = (_dir_bytes(args.out) - bytes_before) if Path(args.out).exists() else 0
    summary["seconds"] = round(time.time() - t_start, 3)
    summary["clips"] = n_clips
    summary["loop_seconds"] = round(loop_s, 3)  # decoding + backbone + pooling + writing
    summary["clips_per_s"] = round(n_clips / max(loop_s, 1e-9), 3)
    _save_config(args, summary, rank)
    _print_summary(summary)
    return summary


def _level_shapes(args: ExtractArgs, bb: VideoBackbone) -> dict:
    c, r = bb.out_channels, args.roi_resolution
    out = {}
    if "roi" in args.save:
        out["roi_shape"] = (c, r, r)
    if "temporal" in args.save:
        out["temporal_shape"] = (bb.sampling.frames, c)
    if "context" in args.save:
        g = args.context_grid
        if g is None:  # full map: frame size / stride, AVA-like 256 x 341 frames
            ss = bb.sampling.short_side
            g_hw = (-(-ss // bb.stride), -(-int(ss * 4 / 3) // bb.stride))
        else:
            g_hw = (g, g)
        out["context_shape"] = (c, *g_hw)
    return out


def _save_config(args: ExtractArgs, summary: dict, rank: int) -> None:
    out = Path(args.out)
    path = out.parent / f"{out.stem}.{args.group}.extract{'' if rank == 0 else f'.rank{rank}'}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": asdict(args), "summary": summary}, indent=2, default=str) + "\n")


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
