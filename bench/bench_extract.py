"""Benchmark `extract features`: end-to-end clips/s vs the backbone forward alone, same clips, same run.

    python bench/bench_extract.py                       # CPU default: tiny SlowFast, 128x96 video
    python bench/bench_extract.py --full --device cuda  # published SlowFast R50 8x8, 320x240 video

ratio = (end-to-end clips/s: decode in threads + backbone + RoI pooling + store writes)
        / (backbone clips/s: pack + forward + RoI pooling on clips already in memory)
Goal: ratio >= 0.8 (decoding hidden behind the backbone).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stagecache.extract.backbones import build_backbone  # noqa: E402
from stagecache.extract.features import ExtractArgs, run_extract  # noqa: E402
from stagecache.extract.roi import pool_rois  # noqa: E402
from stagecache.extract.synthetic import make_video_dataset  # noqa: E402
from stagecache.extract.video import VideoReader  # noqa: E402

TINY = dict(model_depth=50, stem_dim_outs=(16, 2))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="slowfast_r50")
    ap.add_argument("--full", action="store_true", help="published architecture and sampling (default: tiny)")
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=12, help="video length (keyframes = seconds - 3)")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_extract_"))
    ds = work / "ds"
    if not (ds / "dataset.json").exists():
        make_video_dataset(ds, n_videos=a.videos, seconds=a.seconds, width=a.width, height=a.height,
                           splits=("train",))
    kw = {} if a.full else dict(backbone_kwargs=TINY, sampling_overrides=dict(frames=4, short_side=a.height))
    args = ExtractArgs(split="train", videos=str(ds / "videos"), label_map=str(ds / "annotations/label_map.pbtxt"),
                       annotations=str(ds / "annotations/train.csv"),
                       proposals=str(ds / "annotations/train_proposals.csv"), out=str(work / "store.zarr"),
                       backbone=a.backbone, random_init=True, time_offset=900.0, batch_size=a.batch_size,
                       num_workers=a.num_workers, device=a.device, progress=False, **kw)
    shutil.rmtree(work / "store.zarr", ignore_errors=True)

    # backbone alone: same weights, same clips (decoded beforehand), same boxes, same batches
    torch.manual_seed(args.seed)
    bb = build_backbone(args.backbone, sampling_overrides=args.sampling_overrides or None,
                        **args.backbone_kwargs).to(a.device).eval()
    s = bb.sampling
    from stagecache.extract.actors import RowBuilder
    from stagecache.extract import ava_io
    lm = ava_io.read_label_map(args.label_map)
    rb = RowBuilder(label_ids=lm.ids, annotations=ava_io.read_annotations(args.annotations, lm),
                    proposals=ava_io.read_proposals(args.proposals))
    batches = []
    for v in sorted(rb.videos()):
        rows = rb.build(v)
        sl = rows.actor_slices()
        with VideoReader(ds / "videos" / f"{v}.mp4", short_side=s.short_side, square=s.square,
                         time_offset=900.0) as r:
            clips = [r.read_clip(float(t), s.read_frames, s.read_rate) for t in rows.timestamps]
        for i in range(0, len(clips), a.batch_size):
            j = range(i, min(i + a.batch_size, len(clips)))
            boxes = [rows.arrays["actor_box"][sl[k]] for k in j]
            batches.append((np.stack([clips[k] for k in j]), np.concatenate(boxes),
                            np.concatenate([np.full(len(b), n) for n, b in enumerate(boxes)])))
    dev = torch.device(a.device)

    def forward_only():
        n = 0
        t0 = time.perf_counter()
        for clips, boxes, idx in batches:
            x = torch.from_numpy(clips).to(dev)
            with torch.no_grad(), torch.autocast(dev.type, enabled=dev.type == "cuda"):
                maps = bb(bb.pack(x))
            with torch.no_grad():
                out = pool_rois(maps, torch.from_numpy(boxes).to(dev), torch.from_numpy(idx).to(dev),
                                input_size=tuple(x.shape[2:4]), stride=bb.stride)
            out["pooled"].float().cpu()
            n += len(clips)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return n / (time.perf_counter() - t0)

    forward_only()  # warm-up (allocator, cudnn autotune, page cache of the videos)
    fwd = forward_only()
    summary = run_extract(args)
    e2e = summary["clips_per_s"]
    res = {"backbone": a.backbone, "full": a.full, "device": a.device, "clips": summary["clips"],
           "frames_per_clip": s.read_frames, "frame_size": [a.height, a.width], "batch_size": a.batch_size,
           "num_workers": a.num_workers, "torch_threads": a.threads,
           "end_to_end_clips_per_s": round(e2e, 2), "forward_only_clips_per_s": round(fwd, 2),
           "ratio": round(e2e / fwd, 3)}
    print(json.dumps(res, indent=2))
    if not a.workdir:  # a --workdir is kept (its videos are reused); the default temporary one is not
        shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
