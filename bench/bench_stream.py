"""Streamed vs resident split source (issue 33): `train-head --head stage`'s epoch loop at the
official STAGE config, over a fixed number of steps.

Stores are written here in the real layout (StoreWriter): videos of `--kf-per-video` keyframes,
4 GT actors (1024-d I3D actor_pooled, float16) and 25 objects (2048-d object_feature, float16) per
keyframe, 80 classes: ~108 KiB of features per keyframe, as in AVA with STAGE's Visual Genome
objects. Each configuration runs in a fresh subprocess (peak RSS its own), optionally inside a
memory cgroup v1 child (`--limit`, we are root: /sys/fs/cgroup/memory/<name>/memory.limit_in_bytes)
with the default --memory-budget (a share of the cgroup's headroom). Before a configuration runs,
the store's files are dropped from the page cache (posix_fadvise DONTNEED on each file: only
those pages), so a streamed run reads from the disk.

Per configuration: keyframes/s of the epoch loop (`steps.train_epoch` over the first `--steps`
batches of a blocks epoch, batch 6: load time excluded, streaming's reads included), data-wait
share (time waiting for the next batch / loop time), peak RSS, the source chosen and its line.

    python bench/bench_stream.py --root /tmp/bench_stream --sizes 6000,24000 --limit 1536M --steps 40
    python bench/bench_stream.py --root /tmp/bench_stream --clean      # delete the bench stores
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ACTORS, OBJECTS, ACTOR_DIM, OBJECT_DIM, CLASSES = 4, 25, 1024, 2048, 80

def _cgroup() -> str:
    """A child of this process's own v1 memory cgroup (limits nest)."""
    from stagecache.pipelines.training.sources import _own_cgroups

    return f"/sys/fs/cgroup/memory{_own_cgroups()[0]}/stagecache_bench_stream"


CGROUP = _cgroup()
AVA = {"AVA v2.2": 211_000 + 57_000, "AVA-Kinetics": 2 * (211_000 + 57_000)}


def make_store(path: str, keyframes: int, kf_per_video: int, seed: int = 0) -> str:
    from stagecache.extract.store import StoreWriter

    if os.path.exists(os.path.join(path, "zarr.json")):
        return path
    rng = np.random.default_rng(seed)
    videos = max(1, keyframes // kf_per_video)
    # One random block of features reused with a per-video offset: writing speed, not entropy, matters.
    a_block = rng.standard_normal((kf_per_video * ACTORS, ACTOR_DIM)).astype(np.float16)
    o_block = rng.standard_normal((kf_per_video * OBJECTS, OBJECT_DIM)).astype(np.float16)
    with StoreWriter(path, split="train", label_ids=list(range(1, CLASSES + 1)),
                     label_names=[f"c{i}" for i in range(1, CLASSES + 1)],
                     object_classes=[f"o{i}" for i in range(10)]) as w:
        w.declare_group("base", {"source": "bench_stream"})
        w.declare_group("i3d", {"backbone": "i3d"})
        for v in range(videos):
            k, a, o = kf_per_video, kf_per_video * ACTORS, kf_per_video * OBJECTS
            xy = rng.random((a, 2)) * 0.7
            oxy = rng.random((o, 2)) * 0.7
            labels = (rng.random((a, CLASSES)) < 0.03).astype(np.uint8)
            labels[np.arange(a), rng.integers(0, 14, a)] = 1
            base = {"actor_box": np.concatenate((xy, xy + 0.2), 1).astype(np.float32),
                    "actor_score": np.ones(a, np.float32), "actor_is_gt": np.ones(a, bool), "actor_labels": labels,
                    "actor_track": np.tile(np.arange(ACTORS), k).astype(np.int64),
                    "object_box": np.concatenate((oxy, oxy + 0.2), 1).astype(np.float32),
                    "object_class": rng.integers(0, 10, o).astype(np.int64), "object_score": np.ones(o, np.float32),
                    "object_feature": o_block + np.float16(v % 7)}
            counts = dict(timestamps=902.0 + np.arange(k, dtype=np.float64), actor_counts=np.full(k, ACTORS),
                          object_counts=np.full(k, OBJECTS))
            w.add_groups(f"v{v:05d}", groups={"base": base, "i3d": {"actor_pooled": a_block + np.float16(v % 5)}},
                         **counts)
    return path


def drop_cache(path: str) -> None:
    for d, _, names in os.walk(path):
        for n in names:
            fd = os.open(os.path.join(d, n), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def child(cfg: dict) -> dict:
    """One configuration, in this (fresh) process."""
    import torch

    from stagecache.heads import build_head
    from stagecache.pipelines.training import losses
    from stagecache.pipelines.training.split import ReadPlan, SplitSpec, backbone_groups, head_levels, reads_objects
    from stagecache.pipelines.training.split_batches import epoch_batches
    from stagecache.pipelines.training.split_read import load_splits
    from stagecache.pipelines.training.steps import LossContext, SplitContext, make_optimizer, train_epoch
    from stagecache.extract.store import open_store

    torch.manual_seed(0)
    device = torch.device("cpu")
    head = build_head(cfg["head"], actor_dim=ACTOR_DIM, object_dim=OBJECT_DIM, num_classes=CLASSES)
    st = open_store(cfg["store"])
    plan = ReadPlan(backbone_groups(st, []), head_levels(head), "mean", "", 0, reads_objects(head))
    lines = []
    t0 = time.perf_counter()
    [data] = load_splits([(st, SplitSpec(cfg["store"], "train", "gt", 0.0), plan)], device,
                         memory_budget=cfg.get("budget", ""), split_source=cfg["source"], say=lines.append)
    load_s = time.perf_counter() - t0
    split = SplitContext.of(data, float(head.temporal_radius), device)
    batches = epoch_batches(data.graph.query_keyframes(), 6, "blocks", 0, 0)[:cfg["steps"]]
    loss = LossContext("bce", losses.pose_columns(list(range(1, CLASSES + 1)), []))
    opt = make_optimizer(head.parameters(), 6.25e-5, 0.0, device)
    t0 = time.perf_counter()
    stats = train_epoch(head, opt, split, loss, batches)
    loop_s = time.perf_counter() - t0
    src = data.source
    return {"config": cfg["name"], "source": src.kind, "line": lines[0], "load_s": load_s, "loop_s": loop_s,
            "kf_s": stats["seen"] / loop_s, "data_share": stats["data_seconds"] / loop_s,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "chunks": getattr(src, "chunks_read", 0), "stream_peak_gib": getattr(src, "peak", 0) / 2**30}


def run_child(cfg: dict, limit: int | None) -> dict:
    def enter_cgroup():
        if limit:
            with open(f"{CGROUP}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))

    if limit:
        os.makedirs(CGROUP, exist_ok=True)
        with open(f"{CGROUP}/memory.limit_in_bytes", "w") as f:
            f.write(str(limit))
    drop_cache(cfg["store"])
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True,
                       preexec_fn=enter_cgroup)
    if p.returncode != 0:
        tail = p.stderr.strip().splitlines()[-1:] or ["?"]
        return {"config": cfg["name"], "error": f"exit {p.returncode}: {tail[0]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="/tmp/bench_stream")
    ap.add_argument("--sizes", default="6000,24000", help="keyframes of the stores (the last one streamed)")
    ap.add_argument("--kf-per-video", type=int, default=300)
    ap.add_argument("--limit", default="1536M", help="memory cgroup limit of the streamed runs")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--head", default="stage", help="stage (the goal's head) or linear (a data-bound step)")
    ap.add_argument("--stream-budget", default="", help="--memory-budget of the streamed run on the small store "
                    "(default: --limit); small: many chunks")
    ap.add_argument("--only-small", action="store_true", help="only the resident / streamed pairs")
    ap.add_argument("--repeat", type=int, default=2, help="resident / streamed pairs on the small store")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--clean", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.clean:
        shutil.rmtree(args.root, ignore_errors=True)
        return
    from stagecache.pipelines.training.sources import parse_size

    limit = parse_size(args.limit)
    sizes = [int(s) for s in args.sizes.split(",")]
    os.makedirs(args.root, exist_ok=True)
    paths = {}
    for n in sizes:
        t0 = time.perf_counter()
        paths[n] = make_store(os.path.join(args.root, f"s{n}.zarr"), n, args.kf_per_video)
        du = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(paths[n]) for f in fs)
        print(f"store {n} keyframes: {du / 2**30:.2f} GiB ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    small, big = paths[sizes[0]], paths[sizes[-1]]
    common = {"steps": args.steps, "head": args.head}
    results = []
    for _ in range(args.repeat):  # alternated: a shared machine's load drifts between runs
        results.append(run_child(common | {"name": f"resident, {sizes[0]} kf, no limit", "store": small,
                                           "source": "resident", "budget": "64G"}, None))
        results.append(run_child(common | {"name": f"streamed, {sizes[0]} kf, no limit", "store": small,
                                           "source": "streamed", "budget": args.stream_budget or args.limit}, None))
    for n in ([] if args.only_small else sizes[1:]):
        results.append(run_child(common | {"name": f"auto, {n} kf, cgroup {args.limit}", "store": paths[n],
                                           "source": "auto"}, limit))
    if not args.only_small:
        results.append(run_child(common | {"name": f"resident forced, {sizes[-1]} kf, cgroup {args.limit}",
                                           "store": big, "source": "resident"}, limit))
    if os.path.isdir(CGROUP):
        os.rmdir(CGROUP)  # empty again: its processes have exited
    for r in results:
        print(json.dumps(r))
    base = results[0].get("kf_s")
    for r in results:
        if "kf_s" in r:
            print(f"{r['config']:45s} {r['source']:9s} {r['kf_s']:7.1f} kf/s ({r['kf_s'] / base:.2f}x)  data "
                  f"{100 * r['data_share']:4.1f}%  peak RSS {r['peak_rss_gib']:.2f} GiB  chunks {r['chunks']}  "
                  f"chunk buffers peak {r['stream_peak_gib']:.3f} GiB")
        else:
            print(f"{r['config']:45s} {r['error']}")


if __name__ == "__main__":
    main()
