"""Hand-built `HeadInput`s for the relation-head tests (tiny dims, deterministic)."""
from __future__ import annotations

import torch

from stagecache.heads.batch import HeadInput


def make_input(kf_video, kf_time, actors_per_kf, *, actor_dim=6, object_dim=5, seed=0,
               context_hw=None, context_dim=None, roi_k=None, roi_dim=None, temporal_t=None,
               temporal_dim=None, tracks=None, query_kf=None) -> HeadInput:
    """Keyframes (video, time) with `actors_per_kf[k]` actors each; optional levels.

    `query_kf`: keyframe indices whose actors are queries (default: all).
    """
    g = torch.Generator().manual_seed(seed)
    kf_video = torch.tensor(kf_video, dtype=torch.long)
    kf_time = torch.tensor(kf_time, dtype=torch.float64)
    actor_kf = torch.repeat_interleave(torch.arange(len(actors_per_kf)), torch.tensor(actors_per_kf))
    a = actor_kf.numel()
    xy = torch.rand(a, 2, generator=g) * 0.6
    wh = torch.rand(a, 2, generator=g) * 0.3 + 0.1
    box = torch.cat((xy, xy + wh), dim=1)
    if query_kf is None:
        is_query = torch.ones(a, dtype=torch.bool)
    else:
        is_query = torch.isin(actor_kf, torch.tensor(query_kf, dtype=torch.long))
    k = kf_video.numel()
    x = HeadInput(
        kf_video=kf_video, kf_time=kf_time,
        actor_feat=torch.randn(a, actor_dim, generator=g), actor_box=box, actor_kf=actor_kf,
        is_query=is_query,
        object_feat=torch.zeros(0, object_dim), object_box=torch.zeros(0, 4),
        object_kf=torch.zeros(0, dtype=torch.long), object_class=torch.zeros(0, dtype=torch.long),
    )
    if context_hw is not None:
        h, w = context_hw
        x.context = torch.randn(k, context_dim or actor_dim, h, w, generator=g)
    if roi_k is not None:
        x.actor_roi = torch.randn(a, roi_dim or actor_dim, roi_k, roi_k, generator=g)
    if temporal_t is not None:
        x.actor_temporal = torch.randn(a, temporal_t, temporal_dim or actor_dim, generator=g)
    if tracks is not None:
        assert len(tracks) == a, f"{len(tracks)} track ids for {a} actors"
        x.actor_track = torch.tensor(tracks, dtype=torch.long)
    return x


def randomise(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Give every parameter random values (zero-initialised projections would hide relations)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def rows_of(x: HeadInput, kf: int) -> torch.Tensor:
    return (x.actor_kf == kf).nonzero(as_tuple=True)[0]
