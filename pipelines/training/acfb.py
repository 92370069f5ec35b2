"""ACAR-Net's Actor-Context Feature Bank (Pan et al., CVPR 2021, Sec. 3.3), the store side.

Two-stage flow:
  (a) `train-head --head acar` trains a head without a bank;
  (b) `write_relation_bank(run, store)` runs that head's `first_order_maps` over every selected
      actor of a store (call it for the train store and the val store in turn) and writes the maps
      L^i, one row per actor of the store, into a derived group (default "acfb"):
        actor_maps    (A_store, hidden_dim, H, W) float16, zeros for actors not selected;
        actor_in_bank (A_store,) bool, which rows hold a map (training refuses to use a zero row);
  (c) `train-head --head acar --head-arg bank=true --bank-group acfb` trains a fresh head whose
      batches carry the stored maps of every batch actor (`GraphData.actor_extras["bank_maps"]`,
      `extras["bank_kf"]` = the actors' keyframes); the head keeps the entries within its window.
The bank is fixed while (c) trains, as in the paper ("end-to-end except for the feature bank").

Default boxes: GT plus proposals scoring >= 0.8, so that one bank serves training on GT boxes
and validation on proposals at the usual 0.8 threshold. The paper's bank holds the maps of the
detected persons of every clip; with GT boxes in the bank, training sees the annotated people.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from stagecache.core.boxes import check_box_set
from stagecache.extract.store import write_group
from stagecache.pipelines.training.acfb_args import DEFAULT_GROUP  # WriteBankArgs: the command's, torch-free module
from stagecache.pipelines.training.run_dir import load_trained
from stagecache.pipelines.training.run_eval import run_head
from stagecache.pipelines.training.split import SplitSpec, open_run_splits
from stagecache.pipelines.training.steps import SplitContext, resolve_device


def relation_maps(head, data, batch_size: int, device: torch.device, amp: bool = True,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order maps of every actor of a loaded split (`split.Split`, resident or streamed).
    Returns (rows into its graph (N,), maps (N, C, H, W)) on CPU.

    First-order maps depend on an actor's own keyframe only, so batches need no temporal context
    (radius 0: every actor of a batch is a query)."""
    queries = data.graph.query_keyframes()
    if len(queries) == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return run_head(head, SplitContext.of(data, 0.0, device, amp), queries, batch_size=batch_size, progress=progress,
                    desc="first-order maps", fn=head.first_order_maps)


def check_stores(stores: list[str]) -> None:
    """Every store opens and its files are sound (sizes, metadata against the manifests), before
    `write-bank` writes into any: a bad second store must not leave a bank in the first only."""
    from stagecache.extract.store import open_store

    for store in stores:
        open_store(store).check_files()  # StoreError (one line) naming the store and the file


def write_relation_bank(run_dir: str | Path, store: str, group: str = DEFAULT_GROUP, *, boxes: str = "gt+proposals",
                        score_threshold: float = 0.8, checkpoint: str = "best.pt", device: str = "auto",
                        batch_size: int = 64, progress: bool = False, memory_budget: str = "",
                        split_source: str = "auto") -> dict:
    """Write the first-order relation maps of a trained bank-free ACAR head into `store` as `group`.

    Returns a summary {"store", "group", "actors_written", "shape"}. An existing group of that name
    is replaced atomically (readers see the old or the new bank, never a mix)."""
    check_box_set(boxes)
    if group == "base":
        raise ValueError("the bank cannot be written into the 'base' group")
    dev = resolve_device(device)
    head, cfg = load_trained(run_dir, dev, checkpoint)
    if not head.has_first_order_maps:  # a declared capability (heads/protocol.py)
        raise ValueError(f"run {run_dir} trained head {cfg['head']!r}, which has no first_order_maps; "
                         "the bank needs an ACAR head (train-head --head acar)")
    # The maps come from the head's first-order part only; a bank head's own bank is not needed.
    [data] = open_run_splits(run_dir, cfg, head, [SplitSpec(store, "write-bank", boxes, score_threshold)], dev,
                             bank=False, memory_budget=memory_budget, split_source=split_source)
    st, g = data.store, data.graph
    if g.num_actors == 0:
        raise ValueError(f"store {store}: no actors selected with boxes={boxes}, score_threshold={score_threshold}")
    rows, maps = relation_maps(head, data, batch_size, dev, progress=progress)
    store_rows = g.actor_row.cpu()[rows].numpy()
    out = np.zeros((st.num_actors,) + tuple(maps.shape[1:]), dtype=np.float16)  # (A_store, C, H, W)
    out[store_rows] = maps.numpy().astype(np.float16)
    in_bank = np.zeros(st.num_actors, dtype=bool)
    in_bank[store_rows] = True
    # Every selected actor (load_split's selection, g.actor_row) got exactly one map.
    if len(store_rows) != g.num_actors or int(in_bank.sum()) != g.num_actors:
        raise RuntimeError(f"store {store}: bank rows do not match the actor selection (internal error)")
    attrs = {"kind": "acfb_first_order_maps", "run_dir": str(run_dir), "checkpoint": checkpoint,
             "head": cfg["head"], "head_args": cfg["head_args"], "boxes": boxes,
             "score_threshold": float(score_threshold), "hidden_dim": int(maps.shape[1]),
             "map_shape": list(maps.shape[1:])}
    write_group(store, group, attrs, {"actor_maps": out, "actor_in_bank": in_bank})
    print(f"wrote {group}/actor_maps {tuple(out.shape)} ({int(in_bank.sum())} actors) into {store}", file=sys.stderr)
    return {"store": str(store), "group": group, "actors_written": int(in_bank.sum()), "shape": list(out.shape)}
