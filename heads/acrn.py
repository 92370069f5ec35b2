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
covered by the box).

Deviations: the Inception Mixed 5b/5c blocks become `num_convs` 3x3 conv+ReLU layers of
`out_dim` channels (their output width, 1024); the relation output g_theta has `relation_dim`
channels (832 in the paper, the channel count of its feature map); dropout before the classifier
is ours (0.5, as the AVA SlowFast heads). The 1x1 conv on the concatenation is computed as a sum
of per-actor, per-keyframe and location terms, which is the same linear map without
materialising the (A, C_a + C + 7, H, W) tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batch import HeadInput

NUM_LOC_CHANNELS = 7  # box (4) + cell coordinates (2) + rasterised box (1)


def location_channels(box: Tensor, height: int, width: int) -> Tensor:
    """(A, 4) normalised boxes -> (A, 7, H, W): tiled box, cell coordinates, box raster.

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
    ox = (torch.minimum(box[:, 2:3], xs[None] + 1 / width) - torch.maximum(box[:, 0:1], xs[None])).clamp(min=0) * width
    oy = (torch.minimum(box[:, 3:4], ys[None] + 1 / height) - torch.maximum(box[:, 1:2], ys[None])).clamp(min=0) * height
    raster = (oy[:, :, None] * ox[:, None, :])[:, None]  # (A, 1, H, W)
    return torch.cat((tiled, coords, raster), dim=1)


class ScaledL2Norm(nn.Module):
    """L2-normalise along channels, then multiply by a learnable scale (ParseNet)."""

    def __init__(self, init_scale: float = 10.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    def forward(self, x: Tensor, dim: int = 1) -> Tensor:
        return F.normalize(x, dim=dim) * self.scale


class ActorContextRelation(nn.Module):
    """g_theta: 1x1 conv over [tile(actor); box; context; location] for every actor, + ReLU.

    Returns (A, out_dim, H, W) maps, context taken from each actor's keyframe.
    """

    def __init__(self, actor_dim: int, context_dim: int, out_dim: int, *, normalise: bool = True):
        super().__init__()
        self.actor_proj = nn.Linear(actor_dim, out_dim)  # the tiled-actor slice of the 1x1 conv
        self.context_proj = nn.Conv2d(context_dim, out_dim, 1, bias=False)
        self.loc_proj = nn.Conv2d(NUM_LOC_CHANNELS, out_dim, 1, bias=False)
        self.norm_actor = ScaledL2Norm() if normalise else None
        self.norm_context = ScaledL2Norm() if normalise else None

    def forward(self, actor_feat: Tensor, actor_box: Tensor, actor_kf: Tensor, context: Tensor) -> Tensor:
        if self.norm_actor is not None:
            actor_feat = self.norm_actor(actor_feat)
            context = self.norm_context(context)
        h, w = context.shape[-2:]
        ctx = self.context_proj(context)  # (K, d, H, W): computed once per keyframe
        loc = self.loc_proj(location_channels(actor_box.to(context.dtype), h, w))  # (A, d, H, W)
        rel = self.actor_proj(actor_feat)[:, :, None, None] + ctx[actor_kf] + loc
        return F.relu(rel)


class ACRNHead(nn.Module):
    temporal_radius: float = 0.0
    requires: frozenset[str] = frozenset({"context"})

    def __init__(self, actor_dim: int, object_dim: int, num_classes: int, *,
                 context_dim: int | None = None, relation_dim: int = 832, out_dim: int = 1024,
                 num_convs: int = 2, dropout: float = 0.5, normalise: bool = True):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"acrn: num_convs must be >= 1, got {num_convs}")
        context_dim = actor_dim if context_dim is None else context_dim
        self.context_dim = context_dim
        self.relation = ActorContextRelation(actor_dim, context_dim, relation_dim, normalise=normalise)
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
        f_rn = self.accumulate(rel).mean(dim=(2, 3))  # (A, out_dim)
        return self.classifier(self.dropout(torch.cat((x.actor_feat, f_rn), dim=1)))
