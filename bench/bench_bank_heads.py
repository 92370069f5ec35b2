"""Training-step speed of the bank heads (tonly, lfb) when only the query keyframes are computed.

With tonly's default 60 s memory bank (lfb: 60 s window), every batch of query keyframes pulls in
the whole surrounding video as memory. The heads update and classify only the query keyframes'
actors (`HeadInput.is_query`); the baseline, measured in the same run on the same batches, is the
previous behaviour: every actor of the batch updated and classified (all rows marked as queries),
with the loss still on the real query rows. Same parameters, so the query rows' logits agree
(checked before timing).

Data: a feature-level synthetic store (`synth store`, levels temporal) of `--videos` videos x 30
keyframes, batches of `--batch` query keyframes drawn at random, the head's own temporal radius.

    python bench/bench_bank_heads.py            # CPU, about a minute
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from stagecache.extract.store import open_store  # noqa: E402
from stagecache.extract.synthetic import make_feature_store  # noqa: E402
from stagecache.heads import build_head  # noqa: E402
from stagecache.pipelines.training.split_batches import build_graph_data  # noqa: E402

HEADS = {
    "tonly (60 s bank)": ("tonly", {"d_model": 64, "nhead": 4, "dim_feedforward": 128}, frozenset({"actor_temporal"})),
    "lfb (60 s window)": ("lfb", {"hidden_dim": 64}, frozenset()),
}


def step_time(head, opt, batches, all_rows: bool, repeats: int) -> float:
    """Median seconds of forward + BCE + backward + Adam step over `batches`, `repeats` passes."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x, labels in batches:
            q = x.is_query
            if all_rows:
                x.is_query = torch.ones_like(q)
            logits = head(x)
            x.is_query = q
            loss = F.binary_cross_entropy_with_logits(logits[q], labels)
            assert torch.isfinite(loss), "loss is not finite"
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_feature_store(os.path.join(tmp, "s.zarr"), split="train", seed=0, n_videos=args.videos,
                                  keyframes_per_video=30, levels=("temporal",))
        tables = open_store(path).load()
    sel = tables.data["base/actor_is_gt"].numpy().astype(bool)
    print(f"store: {args.videos} videos x 30 keyframes, {int(sel.sum())} GT actors; batches of {args.batch} "
          f"query keyframes, {args.steps} steps, median of {args.repeats}")
    print("| head | actors per batch (queries / all) | all actors s/step | queries only s/step | speed-up |")
    print("|---|---|---|---|---|")
    for label, (name, kw, levels) in HEADS.items():
        g = build_graph_data(tables, backbones=["synthetic"], combine="mean", select=sel, levels=levels)
        head = build_head(name, actor_dim=g.actor_feat.shape[1], object_dim=1, num_classes=7, **kw).train()
        opt = torch.optim.Adam(head.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        batches = []
        for _ in range(args.steps):
            qkf = torch.randperm(g.num_keyframes, generator=gen)[: args.batch]
            x, rows = g.batch(qkf, head.temporal_radius)
            batches.append((x, g.actor_labels[rows[x.is_query]].float()))
        x0 = batches[0][0]
        head.eval()
        with torch.no_grad():
            q = x0.is_query
            x0.is_query = torch.ones_like(q)
            full = head(x0)[q]
            x0.is_query = q
            torch.testing.assert_close(head(x0)[q], full, rtol=1e-4, atol=1e-5)
        head.train()
        n_q = np.mean([int(x.is_query.sum()) for x, _ in batches])
        n_a = np.mean([x.num_actors for x, _ in batches])
        base = step_time(head, opt, batches, True, args.repeats) / args.steps
        ours = step_time(head, opt, batches, False, args.repeats) / args.steps
        print(f"| {label} | {n_q:.0f} / {n_a:.0f} | {base:.4f} | {ours:.4f} | {base / ours:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
