"""Stores and splits shared by the streamed-source tests (test_stream.py, test_stream_runs.py).

`level_store`: a synthetic store (make_feature_store) with every level (roi, temporal, context),
objects and proposals, plus a bank group `acfb` of random first-order maps for every actor, so one
store serves every head of HEADS. `multi_fragment_store`: one fragment per video (what `cache
compact` merges).
"""
from __future__ import annotations

import numpy as np
import torch

from stagecache.extract.store import StoreWriter, open_store, write_group
from stagecache.extract.synthetic import (LABEL_IDS, LABEL_NAMES, OBJECT_CLASSES, make_feature_store, video_arrays,
                                          video_name)
from stagecache.heads import build_head
from stagecache.pipelines.training.sources import keyframe_bytes
from stagecache.pipelines.training.split import ReadPlan, SplitSpec, load_split
from stagecache.pipelines.training.split_read import stream_select

CPU = torch.device("cpu")
ACTOR_DIM, OBJECT_DIM = 16, 8
ACAR_ARGS = {"reduce_dim": 8, "hidden_dim": 4, "num_layers": 1}  # the bank's maps are this head's


def level_store(path, *, seed: int = 0, n_videos: int = 5, keyframes: int = 10) -> str:
    """A store for every head: levels, objects, tracks of proposals, and an `acfb` bank group."""
    make_feature_store(path, split="train", seed=seed, n_videos=n_videos, keyframes_per_video=keyframes,
                       actor_dim=ACTOR_DIM, object_dim=OBJECT_DIM, levels=("roi", "temporal", "context"),
                       context_size=4, roi_size=2, temporal_steps=3)
    st = open_store(str(path))
    head = build_head("acar", actor_dim=ACTOR_DIM, object_dim=OBJECT_DIM, num_classes=len(LABEL_IDS), **ACAR_ARGS)
    g = load_split(SplitSpec(str(path), "t", "gt+proposals", 0.0), levels=["kf_context"], device=CPU).graph
    x, _ = g.batch(g.query_keyframes()[:1], 0.0)
    with torch.no_grad():
        shape = tuple(head.first_order_maps(x).shape[1:])
    rng = np.random.default_rng(seed)
    maps = rng.standard_normal((st.num_actors,) + shape).astype(np.float16)
    write_group(str(path), "acfb", {"kind": "test bank"}, {"actor_maps": maps,
                                                           "actor_in_bank": np.ones(st.num_actors, dtype=bool)})
    return str(path)


def multi_fragment_store(path, *, n_videos: int = 4, keyframes: int = 8, seed: int = 0) -> str:
    """Base + one backbone group, each video its own fragment (flush after every video)."""
    with StoreWriter(str(path), split="train", label_ids=LABEL_IDS, label_names=LABEL_NAMES,
                     object_classes=OBJECT_CLASSES, flush_bytes=1) as w:
        w.declare_group("base", {"source": "test"})
        w.declare_group("bb", {"backbone": "bb"})
        for i in range(n_videos):
            va = video_arrays(seed, "train", i, keyframes, actor_dim=ACTOR_DIM, object_dim=OBJECT_DIM)
            counts = dict(timestamps=va["timestamps"], actor_counts=va["actor_counts"],
                          object_counts=va["object_counts"])
            w.add_video("base", video_name(i), arrays=va["base"], **counts)
            w.add_video("bb", video_name(i), arrays={"actor_pooled": va["pooled"]}, **counts)
    return str(path)


def plan_of(head, store_path: str, backbones=(), bank_group: str = "") -> ReadPlan:
    from stagecache.pipelines.training.split import backbone_groups, head_levels, reads_objects

    st = open_store(store_path)
    return ReadPlan(backbone_groups(st, list(backbones)), head_levels(head), "mean", bank_group, 0, reads_objects(head))


def largest_video_bytes(store_path: str, plan: ReadPlan) -> int:
    """What streaming the store's largest video allocates for `plan` (sources.keyframe_bytes)."""
    st = open_store(store_path)
    kfb = keyframe_bytes(st, stream_select(st, plan))
    return int(np.bincount(st._kf_video, weights=kfb).max())


def splits(store_path: str, head, *, boxes: str = "gt+proposals", budget: int, bank_group: str = "", **kw):
    """(resident Split, streamed Split) of one store for `head`."""
    from stagecache.pipelines.training.split import head_levels, reads_objects

    spec = SplitSpec(store_path, "train", boxes, 0.0)
    common = dict(levels=head_levels(head), device=CPU, bank_group=bank_group, objects=reads_objects(head), **kw)
    return (load_split(spec, **common), load_split(spec, source="streamed", budget=budget, **common))


def same_batch(a, b) -> None:
    """Two `Batch`es equal bit for bit: every HeadInput field, extras, rows, positions, targets."""
    for name, va in vars(a.x).items():
        vb = getattr(b.x, name)
        if isinstance(va, dict):
            assert va.keys() == vb.keys(), name
            for k in va:
                assert torch.equal(va[k], vb[k]), f"extras[{k}]"
        elif isinstance(va, torch.Tensor):
            assert va.dtype == vb.dtype and torch.equal(va, vb), name
        else:
            assert va == vb, name
    assert torch.equal(a.rows.cpu(), b.rows.cpu())
    assert torch.equal(a.query_pos, b.query_pos) and torch.equal(a.target, b.target)


def stream_budget(stores, videos_per_chunk: float = 2.25, objects: bool = True) -> int:
    """A --memory-budget streaming both splits of a (train, val) pair (--split-source streamed) in
    chunks of about `videos_per_chunk` of their largest video."""
    from stagecache.pipelines.training.split import backbone_groups
    from stagecache.pipelines.training.split_read import split_size

    sizes = []
    for path, role in zip(stores, ("train", "val")):
        st = open_store(str(path))
        sizes.append(split_size(st, SplitSpec(str(path), role, "gt", 0.0),
                                ReadPlan(backbone_groups(st, []), [], objects=objects)))
    share = 2 * videos_per_chunk * max(s.largest_video()[1] for s in sizes)
    return int(sum(s.small for s in sizes) + 2 * share)
