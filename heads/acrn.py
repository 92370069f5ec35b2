"""ACRN: actor-centric relation network (Sun et al., ECCV 2018), on cached features.

For actor i with feature a_i and box b_i, and every cell (j, k) of its keyframe's context map F:
    g_theta([a_i; b_i; F(j, k); l(j, k)])  1x1 conv (Eq. 2: actor feature tiled over the map,
                                           box and location embedding as extra channels)
then 3x3 convs accumulate relations over neighbouring cells (paper: the Mixed 5b/5c blocks),
average pooling gives f_RN (1024-d in the paper), and [a_i; f_RN] goes to the classifier.
Following the paper (and [ParseNet]), a_i and F come from different layers with different
amplitudes, so both are L2-normalised and multiplied by a learnable scale before g_theta.

Location embedding: the box coordinates (4 channels, tiled), the cell coordinates
l = (j/H, k/W) (2 channels) and the box rasterised on the map (1 channel: fraction of the cell
covered by the box); with `relative_location`, also the offset of the cell centre from the box
centre (dx, dy) and its length (3 channels).

Options outside the paper, measured on the synthetic relational store (BENCHMARKS.md, "All heads
on one synthetic store"): `tile_actor=False` leaves the actor feature out of g_theta, so the relation
sees the actor only through its box (the actor feature still goes to the classifier); `pool="max"`
max-pools the relation maps instead of averaging them. With the paper's form (actor tiled, average
pooling) the head fits 16 training videos through the tiled actor feature (train AP -> 1.0 on
"hold cup" / "ride bike") and gains nothing on validation; with
`tile_actor=False, pool="max", relative_location=True, normalise=False` it beats `linear` on those
classes by 27 points (the table there; 0.30 AP in tests/pipelines/training/test_relational_heads.py). Without the tiled actor there is nothing to balance the context against, and
per-cell L2 normalisation would lift empty cells to the norm of occupied ones. The defaults stay
the paper's.

Deviations: the Inception Mixed 5b/5c blocks become `num_convs` 3x3 conv+ReLU layers of
`out_dim` channels (their output width, 1024); the relation output g_theta has `relation_dim`
channels (832 in the paper, the channel count of its feature map); dropout before the classifier
is ours (0.5, as the AVA SlowFast heads). The 1x1 conv on the concatenation is computed as a sum
of per-actor, per-keyframe and location terms, which is the same linear map without
materialising the (A, C_a + C + 7 (or 10), H, W) tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batch import HeadInput
from .common import SPATIAL_POOLS, check_pool
from .protocol import HeadBase

NUM_LOC_CHANNELS = 7  # box (4) + cell coordinates (2) + rasterised box (1)
NUM_REL_CHANNELS = 3  # cell centre minus box centre (dx, dy) + its length


def num_location_channels(relative: bool) -> int:
    return NUM_LOC_CHANNELS + (NUM_REL_CHANNELS if relative else 0)


def location_channels(box: Tensor, height: int, width: int, relative: bool = False) -> Tensor:
    """(A, 4) normalised boxes -> (A, 7, H, W): tiled box, cell coordinates, box raster
    (+ dx, dy, distance from the box centre to the cell centre: (A, 10, H, W) when `relative`).

    The raster is the fraction of each cell covered by the box, so small boxes are not lost
    between cell centres.
    """
    a = box.shape[0]
    dev, dt = box.device, box.dtype
    tiled = box[:, :, None, None].expand(a, 4, height, width)
    ys = torch.arange(height, device=dev, dtype=dt) / height  # l = (j/H, k/W): the cell's corner
    xs = torch.arange(width, device=dev, dtype=dt) / width
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None].expand(a, 2, height, width)
    # Overlap of the box with cell [x0, x0 + 1/W] x [y0, y0 + 1/H], as a fraction of the cell.
    ox = (torch.minimum(box[:, 2:3], xs[None] + 1 / width)
          - torch.maximum(box[:, 0:1], xs[None])).clamp(min=0) * width
    oy = (torch.minimum(box[:, 3:4], ys[None] + 1 / height)
          - torch.maximum(box[:, 1:2], ys[None])).clamp(min=0) * height
    raster = (oy[:, :, None] * ox[:, None, :])[:, None]  # (A, 1, H, W)
    parts = [tiled, coords, raster]
    if relative:
        cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2  # (A,)
        dx = ((xs + 0.5 / width)[None, None, :] - cx[:, None, None]).expand(a, height, width)
        dy = ((ys + 0.5 / height)[None, :, None] - cy[:, None, None]).expand(a, height, width)
        parts.append(torch.stack((dx, dy, torch.sqrt(dx * dx + dy * dy)), dim=1))  # (A, 3, H, W)
    return torch.cat(parts, dim=1)


class ScaledL2Norm(nn.Module):
    """L2-normalise along channels, then multiply by a learnable scale (ParseNet)."""

    def __init__(self, init_scale: float = 10.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    def forward(self, x: Tensor, dim: int = 1) -> Tensor:
        return F.normalize(x, dim=dim) * self.scale


class ActorContextRelation(nn.Module):
    """g_theta: 1x1 conv over [tile(actor); box; context; location] for every actor, + ReLU.

    Returns (A, out_dim, H, W) maps, context taken from each actor's keyframe. Without
    `tile_actor` the actor slice is left out (the conv's bias moves to the location slice).
    """

    def __init__(self, actor_dim: int, context_dim: int, out_dim: int, *, normalise: bool = True,
                 tile_actor: bool = True, relative_location: bool = False):
        super().__init__()
        self.relative_location = relative_location
        # the tiled-actor slice of the 1x1 conv
        self.actor_proj = nn.Linear(actor_dim, out_dim) if tile_actor else None
        self.context_proj = nn.Conv2d(context_dim, out_dim, 1, bias=False)
        n_loc = num_location_channels(relative_location)
        self.loc_proj = nn.Conv2d(n_loc, out_dim, 1, bias=not tile_actor)
        self.norm_actor = ScaledL2Norm() if normalise and tile_actor else None
        self.norm_context = ScaledL2Norm() if normalise else None

    def forward(self, actor_feat: Tensor, actor_box: Tensor, actor_kf: Tensor, context: Tensor) -> Tensor:
        if self.norm_context is not None:
            context = self.norm_context(context)
        h, w = context.shape[-2:]
        ctx = self.context_proj(context)  # (K, d, H, W): computed once per keyframe
        loc = self.loc_proj(location_channels(actor_box.to(context.dtype), h, w,
                                              self.relative_location))  # (A, d, H, W)
        if self.actor_proj is None:
            return F.relu(ctx[actor_kf] + loc)
        a = actor_feat if self.norm_actor is None else self.norm_actor(actor_feat)
        return F.relu(self.actor_proj(a)[:, :, None, None] + ctx[actor_kf] + loc)


class ACRNHead(HeadBase):
    temporal_radius: float = 0.0
    requires: frozenset[str] = frozenset({"context"})

    def __init__(self, actor_dim: int, object_dim: int, num_classes: int, *,
                 context_dim: int | None = None, relation_dim: int = 832, out_dim: int = 1024,
                 num_convs: int = 2, dropout: float = 0.5, normalise: bool = True,
                 tile_actor: bool = True, pool: str = "avg", relative_location: bool = False):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"acrn: num_convs must be >= 1, got {num_convs}")
        check_pool("acrn", pool)
        context_dim = actor_dim if context_dim is None else context_dim
        self.context_dim = context_dim
        self.pool = pool
        self.relation = ActorContextRelation(actor_dim, context_dim, relation_dim, normalise=normalise,
                                             tile_actor=tile_actor, relative_location=relative_location)
        layers: list[nn.Module] = []
        c = relation_dim
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, out_dim, 3, padding=1), nn.ReLU(inplace=True)]
            c = out_dim
        self.accumulate = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(actor_dim + out_dim, num_classes)

    def forward(self, x: HeadInput) -> Tensor:
        if x.context is None:
            raise ValueError("acrn needs x.context (K, C, H, W): the store's kf_context level")
        if x.context.shape[1] != self.context_dim:
            raise ValueError(f"acrn: context has {x.context.shape[1]} channels, head built with "
                             f"context_dim={self.context_dim}")
        rel = self.relation(x.actor_feat, x.actor_box, x.actor_kf, x.context)  # (A, d, H, W)
        f_rn = SPATIAL_POOLS[self.pool](self.accumulate(rel))  # (A, out_dim)
        return self.classifier(self.dropout(torch.cat((x.actor_feat, f_rn), dim=1)))
