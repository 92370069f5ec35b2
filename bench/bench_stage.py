"""Training-speed benchmark of `heads.stage.STAGEHead` against a straightforward implementation.

The straightforward one (written here, like the official STAGE code) loops over windows in
Python, builds each window's dense N x N adjacency and the dense N x N x 2F tensor of
concatenations h_i || h_j for the attention FC. Both use the same parameters, so their outputs
agree (checked below before timing). Inputs are AVA-like and built here: per keyframe 4 actors
(2304-d, SlowFast) and 25 objects (2048-d, Faster R-CNN VG); each window is 3 consecutive
keyframes of its own video, its centre keyframe is the query (loss on its actors).

Measured: training step (forward + BCE loss + backward + Adam step), query keyframes per second,
peak memory (CUDA: max_memory_allocated; CPU: peak RSS growth of a fresh subprocess per
implementation), and the projected time of 20 epochs over AVA's 211k train keyframes.
A second layout for ours only, "runs": runs of consecutive keyframes of one video, every keyframe
at distance >= temporal_radius from the run ends is a query (exact outputs), so context is shared.

    python bench/bench_stage.py                      # CPU, short (about a minute)
    python bench/bench_stage.py --device cuda        # GPU (autocast float16 by default)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from stagecache.heads.batch import HeadInput, box_centres, box_geometry  # noqa: E402
from stagecache.heads.stage import STAGEHead  # noqa: E402

ACTOR_DIM, OBJECT_DIM, NUM_CLASSES = 2304, 2048, 80
AVA_TRAIN_KEYFRAMES, EPOCHS = 211_000, 20


def make_batch(num_videos: int, kf_per_video: int, *, actors=4, objects=25, queries_from=1, seed=0):
    """num_videos videos of kf_per_video consecutive keyframes (1 s apart); queries are the actors
    of keyframes at least `queries_from` keyframes away from both run ends."""
    g = torch.Generator().manual_seed(seed)
    k = num_videos * kf_per_video
    kf_video = torch.arange(num_videos).repeat_interleave(kf_per_video)
    kf_time = torch.arange(kf_per_video, dtype=torch.float64).repeat(num_videos) + 900.0
    pos = torch.arange(kf_per_video).repeat(num_videos)
    kf_query = (pos >= queries_from) & (pos < kf_per_video - queries_from)
    actor_kf = torch.arange(k).repeat_interleave(actors)
    object_kf = torch.arange(k).repeat_interleave(objects)

    def boxes(n):
        xy = torch.rand(n, 2, generator=g) * 0.7
        return torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 0.3 + 0.01), 1)

    x = HeadInput(
        kf_video=kf_video, kf_time=kf_time,
        actor_feat=torch.randn(k * actors, ACTOR_DIM, generator=g).relu(), actor_box=boxes(k * actors),
        actor_kf=actor_kf, is_query=kf_query[actor_kf],
        object_feat=torch.randn(k * objects, OBJECT_DIM, generator=g).relu(), object_box=boxes(k * objects),
        object_kf=object_kf, object_class=torch.zeros(k * objects, dtype=torch.long),
    )
    labels = (torch.rand(k * actors, NUM_CLASSES, generator=g) < 0.05).float()
    return x, labels, int(kf_query.sum())


def naive_forward(head: STAGEHead, x: HeadInput) -> torch.Tensor:
    """Per-video Python loop, dense adjacency and dense N x N x 2F pair tensor (official-code style)."""
    outs = []
    radius = head.link_radius
    for v in torch.unique(x.kf_video).tolist():
        kfs = torch.nonzero(x.kf_video == v).flatten()
        am, om = torch.isin(x.actor_kf, kfs), torch.isin(x.object_kf, kfs)
        fa = torch.cat((x.actor_feat[am], box_geometry(x.actor_box[am])), 1)
        fo = torch.cat((x.object_feat[om], box_geometry(x.object_box[om])), 1)
        fa = head.actor_proj(fa) if head.actor_proj is not None else fa
        fo = head.object_proj(fo) if head.object_proj is not None else fo
        f = torch.cat((fa, fo.to(fa.dtype)), 0)  # (N, d_f)
        c = box_centres(torch.cat((x.actor_box[am], x.object_box[om]), 0))
        t = torch.cat((x.kf_time[x.actor_kf[am]], x.kf_time[x.object_kf[om]]))
        linked = (t[:, None] - t[None, :]).abs() <= radius + 1e-3  # (N, N)
        adj = torch.exp(-torch.cdist(c, c)) * linked  # Eq. 1, zero between unlinked clips
        n = f.shape[0]
        for layer in head.layers:
            dh, heads = layer.head_dim, []
            for k in range(layer.num_heads):
                rows = slice(k * dh, (k + 1) * dh)
                h = F.linear(f, layer.fc_h.weight[rows], layer.fc_h.bias[rows])  # (N, d_h)
                pair = torch.cat((h[:, None].expand(n, n, dh), h[None].expand(n, n, dh)), -1)  # (N, N, 2 d_h)
                e = F.leaky_relu(pair @ layer.attn_w[k].to(pair.dtype) + layer.attn_b[k], layer.leaky_slope)
                w = torch.softmax((adj * e).float().masked_fill(~linked, float("-inf")), -1)
                heads.append(layer.drop(F.elu(w.to(h.dtype) @ h)))
            f = layer.norm(f + layer.fc_out(torch.cat(heads, 1)))
        outs.append(head.classifier(f[: int(am.sum())]))
    return torch.cat(outs)


def run_impl(impl: str, args) -> dict:
    torch.manual_seed(0)
    dev = torch.device(args.device)
    amp = args.amp and dev.type == "cuda"
    if impl == "runs":
        x, labels, nq = make_batch(args.runs, args.run_length, queries_from=2)
    else:
        x, labels, nq = make_batch(args.windows, 3, queries_from=1)
    x, labels = x.to(dev), labels.to(dev)
    head = STAGEHead(ACTOR_DIM, OBJECT_DIM, NUM_CLASSES).to(dev).train()
    fwd = naive_forward if impl == "naive" else STAGEHead.forward
    opt = torch.optim.Adam(head.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            logits = fwd(head, x)
        loss = F.binary_cross_entropy_with_logits(logits.float()[x.is_query], labels[x.is_query])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rss0 = _rss_now()
    for _ in range(args.warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else _peak_rss() - rss0
    return {"impl": impl, "query_kf_per_step": nq, "keyframes_per_step": x.num_keyframes,
            "s_per_step": dt, "query_kf_per_s": nq / dt, "peak_bytes": peak}


def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def check_equal(args) -> float:
    """Ours and the naive implementation give the same logits for the query actors (eval mode,
    float32; ours leaves the other rows as zeros, heads/batch.py)."""
    torch.manual_seed(0)
    x, _, _ = make_batch(2, 3)
    head = STAGEHead(ACTOR_DIM, OBJECT_DIM, NUM_CLASSES).eval()
    with torch.no_grad():
        a, b = head(x)[x.is_query], naive_forward(head, x)[x.is_query]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    return float((a - b).abs().max())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: cpu)")
    ap.add_argument("--windows", type=int, default=None, help="windows per batch (default: 8 on CPU, 64 on GPU)")
    ap.add_argument("--runs", type=int, default=None, help="'runs' layout: videos per batch (default: 2 CPU, 16 GPU)")
    ap.add_argument("--run-length", type=int, default=12, help="'runs' layout: keyframes per run (default: 12)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 2 on CPU, 20 on GPU)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    ap.add_argument("--no-amp", dest="amp", action="store_false", help="disable float16 autocast on CUDA")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    ap.add_argument("--impl", choices=["ours", "naive", "runs"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    args.windows = args.windows or (64 if gpu else 8)
    args.runs = args.runs or (16 if gpu else 2)
    args.steps = args.steps or (20 if gpu else 2)

    if args.impl:  # child: one implementation, fresh process so its peak memory is its own
        print(json.dumps(run_impl(args.impl, args)))
        return
    err = check_equal(args)
    print(f"equal outputs: ours vs naive max |diff| = {err:.2e}")
    results = {}
    for impl in ("ours", "naive", "runs"):
        cmd = [sys.executable, os.path.abspath(__file__), "--impl", impl] + [a for a in sys.argv[1:]]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[impl] = r = json.loads(out)
        proj_h = EPOCHS * AVA_TRAIN_KEYFRAMES / r["query_kf_per_s"] / 3600
        print(f"{impl:>5}: {r['query_kf_per_step']:4d} query kf/step ({r['keyframes_per_step']} kf), "
              f"{r['s_per_step']*1e3:8.1f} ms/step, {r['query_kf_per_s']:8.1f} query kf/s, "
              f"peak {r['peak_bytes']/2**20:8.1f} MiB, 20 epochs x 211k kf: {proj_h:6.2f} h")
    print(f"speed-up ours/naive (same windows): {results['ours']['query_kf_per_s'] / results['naive']['query_kf_per_s']:.1f}x; "
          f"runs/naive: {results['runs']['query_kf_per_s'] / results['naive']['query_kf_per_s']:.1f}x")
    print(f"device={args.device} amp={args.amp and gpu} threads={args.threads} torch={torch.__version__}")


if __name__ == "__main__":
    main()
