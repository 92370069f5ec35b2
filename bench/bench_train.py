"""End-to-end `train-head` throughput: STAGE against the official code's structure, the FLOP
ceiling, and every head of `heads.HEADS` against its bare training step.

Part `stage` (one process, the two alternating in rounds, medians reported):
- `ours`: train-head's own epoch loop (`pipelines.training.steps.train_epoch`: batches gathered from a
  device-resident `GraphData` by `GraphData.training_batches`, a chunk of batches at a time; query
  keyframes from `split_batches.epoch_batches`, `--sampling` blocks of consecutive ones or random;
  fused Adam) with `heads.stage.STAGEHead`. Validation excluded.
- `official`: the structure of the official STAGE code (aimagelab/STAGE_action_detection),
  written here: the same blocks of `batch_size` consecutive keyframes (its sampler), collated per
  step from per-keyframe tensors into one node list with a dense N x N adjacency filled keyframe
  by keyframe by batch position (keyframe i of the batch linked to i-1 and i+1, exp(-centre
  distance)), per head the dense N x N x 2F tensor of concatenations h_i || h_j, softmax over the
  whole batch row, ELU, dropout, residual FC and LayerNorm, BCE on every actor, torch's default
  Adam. The official code trains every keyframe of its batch (neighbours by batch position, not
  exact); ours trains the batch's queries with their full temporal neighbourhood (exact).
Both: 2 layers, 4 heads, lr 6.25e-5, fp32 on CPU (float16 autocast on CUDA for ours). Graph
sizes: `official` (4 GT actors 1024-d, 25 objects 2048-d per keyframe, 80 classes) and `synth`
(3 actors, 5 objects: `synth store --actor-dim 1024 --object-dim 2048`).

FLOP ceiling: FLOPs of one forward + backward of STAGEHead at the model's widths
(`align_widths=False`: the zero channels ours computes on count against ours) counted by torch's
FlopCounterMode on whole runs of consecutive keyframes, all of them queries (every keyframe
computed once: the work's floor), per keyframe; divided into the matmul rate (best of 3 square 2048 matmuls in the
step's dtype, measured in every round between the timed runs; median over rounds) it gives the
ceiling in keyframes/s; fraction = ours / ceiling. Padding, context keyframes (a block of 6 queries needs 2 more on each side) and the
optimizer all count against ours.

Validation: train-head's prediction over the split (per keyframe, scaled to AVA's val split) plus
the evaluator (`pipelines.evaluation.ava.frame_map`) timed on an AVA-val-sized input, as a fraction of
an epoch over AVA's train split at ours' measured rate plus that validation.

Part `heads`: every head of `heads.HEADS` (widths of the `all-heads-synthetic` preset) on a
synthetic store (64-d, levels roi/temporal/context, GT tracks) loaded by train-head's
`load_split`: train-head's epoch loop (`train_epoch`, what `train()` runs between validations)
against the bare step (forward + loss + backward + fused Adam) on the same batches, built
beforehand and already on the device; the two alternate in one process, medians reported
(`--sampling random` for independent random batches).

    python bench/bench_train.py                     # CPU, both parts (~5 min on a quiet 2-core box)
    python bench/bench_train.py --part stage --device cuda --rounds 5 --steps 50
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stagecache.heads import HEADS, build_head  # noqa: E402
from stagecache.pipelines.training.split_batches import GraphData  # noqa: E402

from official_stage import OfficialStage, official_collate, official_items  # noqa: E402

AVA_TRAIN_KEYFRAMES, EPOCHS = 211_000, 20
SIZES = {"official": (4, 25), "synth": (3, 5)}  # (actors, objects) per keyframe
ACTOR_DIM, OBJECT_DIM, NUM_CLASSES, NUM_HEADS, LR = 1024, 2048, 80, 4, 6.25e-5


def make_graph(videos: int, keyframes: int, actors: int, objects: int, device, seed: int = 0) -> GraphData:
    """A split of `videos` x `keyframes` (1 s apart), fixed actors/objects per keyframe, float16
    features as a store holds them, on `device`."""
    g = torch.Generator().manual_seed(seed)
    k = videos * keyframes
    a, o = k * actors, k * objects

    def boxes(n):
        xy = torch.rand(n, 2, generator=g) * 0.7
        return torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 0.3 + 0.01), 1)

    gd = GraphData(
        video_names=[f"v{i}" for i in range(videos)],
        kf_video=torch.arange(videos).repeat_interleave(keyframes),
        kf_time=torch.arange(keyframes, dtype=torch.float64).repeat(videos) + 902.0,
        actor_offset=torch.arange(k + 1) * actors, object_offset=torch.arange(k + 1) * objects,
        actor_feat=torch.randn(a, ACTOR_DIM, generator=g).relu().half(), actor_box=boxes(a),
        actor_labels=(torch.rand(a, NUM_CLASSES, generator=g) < 0.05).to(torch.uint8),
        actor_score=torch.ones(a), actor_is_gt=torch.ones(a, dtype=torch.bool), actor_track=torch.arange(a),
        actor_row=torch.arange(a), object_feat=torch.randn(o, OBJECT_DIM, generator=g).relu().half(),
        object_box=boxes(o), object_class=torch.zeros(o, dtype=torch.long),
    )
    for name, value in vars(gd).items():
        if isinstance(value, torch.Tensor):
            setattr(gd, name, value.to(device))
    return gd


# ----------------------------------------------------------------------------- measurement helpers


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device, dtype, n: int = 2048, reps: int = 3) -> float:
    """Best FLOP/s of an n x n x n matmul: the machine's practical ceiling for the step's dtype."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):
        sync(device)
        t = time.perf_counter()
        for _ in range(4 if device.type == "cuda" else 1):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t) / (4 if device.type == "cuda" else 1))
    return 2 * n ** 3 / best


def step_flops(head, x, qpos, target) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from stagecache.pipelines.training.losses import bce
    with FlopCounterMode(display=False) as fc:
        loss = bce(head(x).index_select(0, qpos), target, qpos[:0])
        loss.backward()
    head.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def stage_part(args, device) -> dict:
    from stagecache.pipelines.training.split_batches import epoch_batches
    from stagecache.pipelines.training.steps import LossContext, SplitContext, device_batch, make_optimizer, train_epoch

    amp = args.amp and device.type == "cuda"
    # The dtype of ours' matmuls, for the ceiling: float16/bfloat16 under autocast, else float32.
    half = (torch.bfloat16 if args.cpu_bf16 and device.type == "cpu" else
            (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp else torch.float32)
    results = {}
    for size in args.sizes:
        actors, objects = SIZES[size]
        g = make_graph(args.videos, args.keyframes, actors, objects, device)
        torch.manual_seed(0)
        stage_args = dict(actor_dim=ACTOR_DIM, object_dim=OBJECT_DIM, num_classes=NUM_CLASSES, num_heads=NUM_HEADS)
        ours = build_head("stage", **stage_args).to(device)
        off = OfficialStage(ACTOR_DIM, OBJECT_DIM, NUM_CLASSES, NUM_HEADS).to(device).train()
        opt_ours = make_optimizer(ours.parameters(), LR, 0.0, device)
        # FLOPs are counted at the model's widths, not on ours' zero-padded ones.
        counted = build_head("stage", **stage_args, align_widths=False).to(device)
        counted.load_state_dict(ours.state_dict())
        opt_off = torch.optim.Adam(off.parameters(), lr=LR)
        items = official_items(g)
        queries = torch.arange(g.num_keyframes)
        radius = float(ours.temporal_radius)
        no_pose = torch.zeros(0, dtype=torch.long)
        split = SplitContext(g, radius, device, amp)
        loss_ctx = LossContext("bce", no_pose, cpu_bf16=args.cpu_bf16)

        # FLOPs per keyframe with every keyframe computed once (whole videos, all queries: two of them,
        # or the one of --videos 1).
        n_floor = min(2 * args.keyframes, g.num_keyframes)
        x, qpos, target, _ = device_batch(split, queries[:n_floor])
        floor = step_flops(counted, x, qpos, target) / n_floor

        def run_ours(batches):
            sync(device)
            t = time.perf_counter()
            train_epoch(ours, opt_ours, split, loss_ctx, batches)
            return sum(len(b) for b in batches) / (time.perf_counter() - t)

        def run_official(batches):
            sync(device)
            t = time.perf_counter()
            for b in batches:
                cat, adj = official_collate([items[int(k)] for k in b], device)
                logits = off(cat["af"], cat["ab"], cat["of"], cat["ob"], adj)
                loss = F.binary_cross_entropy_with_logits(logits, cat["al"])
                opt_off.zero_grad()
                loss.backward()
                opt_off.step()
            sync(device)
            return sum(len(b) for b in batches) / (time.perf_counter() - t)

        peaks = {}
        rates = {"ours": [], "official": [], "matmul": []}  # matmul FLOP/s, measured each round (busy machines)
        for r in range(args.rounds + 1):  # round 0 warms up
            work = {"ours": epoch_batches(queries, args.batch_size, args.sampling, 0, r)[: args.steps],
                    "official": epoch_batches(queries, args.official_batch_size, "blocks", 0, r)[
                        : max(1, args.steps * args.batch_size // args.official_batch_size)]}
            for name, fn in (("ours", run_ours), ("official", run_official)):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                kf_s = fn(work[name])
                if r:
                    rates[name].append(kf_s)
                if device.type == "cuda":
                    peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated(device))
            if r:
                rates["matmul"].append(matmul_rate(device, half))
        med = {k: statistics.median(v) for k, v in rates.items() if k != "matmul"}
        rate = statistics.median(rates["matmul"])
        ceiling = rate / floor
        first = epoch_batches(queries, args.batch_size, args.sampling, 0, 0)[:3]  # a block may be cut short
        per_step = sum(step_flops(counted, *device_batch(split, b)[:3]) for b in first) / sum(len(b) for b in first)
        results[size] = r = {"actors": actors, "objects": objects, "ours_kf_s": med["ours"],
                             "official_kf_s": med["official"], "ratio": med["ours"] / med["official"],
                             "flop_per_kf_floor": floor, "flop_per_kf_ours": per_step, "matmul_flop_s": rate,
                             "ceiling_kf_s": ceiling, "fraction_of_ceiling": med["ours"] / ceiling,
                             "official_fraction": med["official"] / ceiling, "rounds": rates, "peak_bytes": peaks}
        if args.val_keyframes:
            pred_kf, ev = validation_seconds(ours, g, device, amp, args.val_keyframes, actors)
            epoch_s = AVA_TRAIN_KEYFRAMES / med["ours"]
            val_s = pred_kf * args.val_keyframes + ev
            r.update(val_predict_s_per_kf=pred_kf, val_evaluator_s=ev, val_fraction=val_s / (epoch_s + val_s))
        proj = {k: EPOCHS * AVA_TRAIN_KEYFRAMES / v / 60 for k, v in med.items()}
        print(f"[{size}: {actors} actors + {objects} objects per keyframe, batch {args.batch_size} ({args.sampling}) "
              f"(official: {args.official_batch_size})]")
        for name in ("ours", "official"):
            mem = f", peak {peaks[name] / 2**20:.0f} MiB" if name in peaks else ""
            print(f"  {name:>8}: {med[name]:8.1f} keyframes/s (rounds: "
                  f"{', '.join(f'{v:.1f}' for v in rates[name])}){mem}; 20 epochs x 211k keyframes: {proj[name]:.1f} min")
        print(f"  ours / official: {r['ratio']:.1f}x")
        print(f"  FLOPs per keyframe: {floor / 1e9:.3f} G (each keyframe once), {per_step / 1e9:.3f} G in ours' "
              f"batches (context included); matmul {rate / 1e9:.0f} GFLOP/s -> ceiling {ceiling:.1f} keyframes/s; "
              f"ours {r['fraction_of_ceiling'] * 100:.0f}% of it, official {r['official_fraction'] * 100:.0f}%")
        if args.val_keyframes:
            print(f"  validation per epoch, AVA-sized ({AVA_TRAIN_KEYFRAMES} train / {args.val_keyframes} val keyframes): "
                  f"prediction {r['val_predict_s_per_kf'] * args.val_keyframes:.0f} s + evaluator "
                  f"{r['val_evaluator_s']:.1f} s = {r['val_fraction'] * 100:.1f}% of an epoch with validation")
    return results


def validation_seconds(head, g: GraphData, device, amp: bool, val_keyframes: int, per_kf: int) -> tuple[float, float]:
    """(prediction seconds per keyframe, evaluator seconds for `val_keyframes`): train-head's
    prediction (`run_head`, batches of 64) over the split `g`, and `pipelines.evaluation.ava.frame_map`
    (official protocol, cap 50) on a seeded AVA-like input with `per_kf` boxes per keyframe, each
    scored for the 60 AVA classes, 1-3 GT actions per box."""
    import numpy as np

    from stagecache.pipelines.evaluation.ava import frame_map
    from stagecache.pipelines.training.run_eval import run_head
    from stagecache.pipelines.training.steps import SplitContext

    sync(device)
    t = time.perf_counter()
    run_head(head, SplitContext(g, float(head.temporal_radius), device, amp), batch_size=64)
    sync(device)
    pred = (time.perf_counter() - t) / g.num_keyframes

    rng = np.random.default_rng(0)
    classes = np.arange(1, 61)
    n = val_keyframes * per_kf
    kf = np.repeat(np.arange(val_keyframes), per_kf)
    xy = rng.random((n, 2)) * 0.7
    box = np.concatenate((xy, xy + rng.random((n, 2)) * 0.3 + 0.01), 1)
    n_lab = rng.integers(1, 4, n)
    gt_rows = np.repeat(np.arange(n), n_lab)
    gt_class = rng.integers(1, 61, len(gt_rows))
    t = time.perf_counter()
    frame_map(kf[gt_rows], box[gt_rows], gt_class, np.repeat(kf, 60), np.repeat(box, 60, axis=0),
              np.tile(classes, n), np.round(rng.random(n * 60), 6), class_ids=list(classes), max_dets_per_kf=50)
    return pred, time.perf_counter() - t


# ----------------------------------------------------------------------------- every head


def preset_head_args() -> dict[str, dict]:
    """Each head's arguments in the all-heads-synthetic preset (its first configuration)."""
    from stagecache.pipelines.ablation.spec import load_spec, parse_spec

    spec = parse_spec(*load_spec("all-heads-synthetic"))
    out = {}
    for c in spec.configs:
        out.setdefault(c.head, c.head_args)
    return out


def heads_part(args, device) -> dict:
    head_args = preset_head_args()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        return _heads_on(Path(tmp), args, device, head_args)


def _heads_on(tmp: Path, args, device, head_args: dict) -> dict:
    """`heads_part` with its synthetic store written under `tmp`."""
    from stagecache.extract.synthetic import make_feature_store
    from stagecache.extract.store import open_store
    from stagecache.pipelines.training.split_batches import epoch_batches
    from stagecache.pipelines.training.split import SplitSpec, backbone_groups, feature_dims, head_levels, load_split, reads_objects
    from stagecache.pipelines.training.steps import LossContext, SplitContext, device_batch, make_optimizer, step_loss, train_epoch

    kw = dict(keyframes_per_video=30, actor_dim=64, object_dim=32, levels=("roi", "temporal", "context"))
    tr = make_feature_store(tmp / "train.zarr", split="train", seed=0, n_videos=args.head_videos, **kw)
    no_pose = torch.zeros(0, dtype=torch.long, device=device)
    results = {}
    for name in sorted(HEADS) if not args.heads else args.heads:
        hargs = head_args.get(name, {})
        store = open_store(str(tr))
        actor_dim, object_dim = feature_dims(store, backbone_groups(store, []), "mean")
        torch.manual_seed(0)
        head = build_head(name, actor_dim=actor_dim, object_dim=object_dim,
                          num_classes=len(store.attrs["label_ids"]), **hargs).to(device).train()
        g = load_split(SplitSpec(str(tr), "train", "gt", 0.9), levels=head_levels(head), device=device,
                       objects=reads_objects(head)).graph
        opt = make_optimizer(head.parameters(), 3e-3, 0.0, device)
        radius = float(head.temporal_radius)
        split, loss_ctx = SplitContext(g, radius, device, amp=False), LossContext("bce", no_pose)
        batches = epoch_batches(g.query_keyframes(), 8, args.sampling, 0, 0)
        kf = sum(len(b) for b in batches)
        # Bare step: the same batches built beforehand, already on the device; the loop's loss.
        prepared = [device_batch(split, b, aux_labels=head.has_aux_loss) for b in batches]

        def bare():
            sync(device)
            t = time.perf_counter()
            for x, qpos, target, actor_labels in prepared:
                loss = step_loss(head, x, qpos, target, loss_ctx, amp=False, actor_labels=actor_labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sync(device)
            return kf / (time.perf_counter() - t)

        def loop():
            t = time.perf_counter()
            train_epoch(head, opt, split, loss_ctx, batches)
            return kf / (time.perf_counter() - t)

        rates = {"loop": [], "bare": []}
        for r in range(args.rounds + 1):  # round 0 warms up; then alternate
            for k, fn in (("loop", loop), ("bare", bare)):
                v = fn()
                if r:
                    rates[k].append(v)
        e2e, b = statistics.median(rates["loop"]), statistics.median(rates["bare"])
        results[name] = {"e2e_kf_s": e2e, "bare_kf_s": b, "ratio": e2e / b, "rounds": rates}
        print(f"  {name:>8}: train-head epoch loop {e2e:8.1f} keyframes/s, bare step {b:8.1f}: {e2e / b:.2f}")
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: cpu)")
    ap.add_argument("--part", choices=["stage", "heads", "all"], default="all")
    ap.add_argument("--sizes", default="official,synth", help="graph sizes for part stage: official,synth")
    ap.add_argument("--videos", type=int, default=4, help="part stage: videos in the split (default 4)")
    ap.add_argument("--keyframes", type=int, default=60, help="part stage: keyframes per video (default 60)")
    ap.add_argument("--batch-size", type=int, default=6, help="query keyframes per step (default 6, the paper's)")
    ap.add_argument("--official-batch-size", type=int, default=6, help="the official structure's batch (default 6)")
    ap.add_argument("--steps", type=int, default=10, help="part stage: steps per implementation per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (plus 1 warm-up)")
    ap.add_argument("--val-keyframes", type=int, default=57_408,
                    help="part stage: validation cost for this many val keyframes (AVA v2.2: 64 x 897; 0: skip)")
    ap.add_argument("--head-videos", type=int, default=16, help="part heads: train videos x 30 keyframes")
    ap.add_argument("--heads", default="", help="part heads: comma-separated heads (default: every head of heads.HEADS)")
    ap.add_argument("--sampling", choices=["blocks", "random"], default="blocks", help="ours' batch sampling, both parts (train-head --sampling; the official structure always "
                    "trains blocks of consecutive keyframes, as its sampler does)")
    ap.add_argument("--cpu-bf16", action="store_true", help="ours with bfloat16 autocast on CPU (train-head --cpu-bf16)")
    ap.add_argument("--no-amp", dest="amp", action="store_false", help="ours in float32 on CUDA too")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.heads = [h for h in args.heads.split(",") if h]
    for h in args.heads:
        if h not in HEADS:
            ap.error(f"unknown head {h!r}; valid: {', '.join(sorted(HEADS))}")
    for s in args.sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}; valid: {', '.join(SIZES)}")
    device = torch.device(args.device)
    out = {}
    if args.part in ("stage", "all"):
        out["stage"] = stage_part(args, device)
    if args.part in ("heads", "all"):
        print("[every head: train() end to end vs its bare step on device-resident batches]")
        out["heads"] = heads_part(args, device)
    print(f"device={args.device} threads={args.threads} torch={torch.__version__} "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
