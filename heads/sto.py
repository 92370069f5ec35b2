"""STO: the short-term operator baseline (LFB, Wu et al. 2019; STAGE Table 7).

Each actor attends, through one or more LFB-style non-local blocks, to the actors of its own
keyframe (itself included). The pooled actor feature is reduced to `hidden_dim` (512 in LFB),
updated by `num_layers` non-local blocks (STAGE reports 1 and 2 layers; default 2 as LFB's FBO),
concatenated with the original actor feature and classified after dropout (0.5 as in the
SlowFast/LFB AVA heads).

Deviation: LFB applies the operator on the RoI features of a fine-tuned backbone; here the actor
features are the cached, frozen backbone's pooled features.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .batch import HeadInput
from .common import NonLocalBlock, same_keyframe_mask
from .protocol import HeadBase


class STOHead(HeadBase):
    temporal_radius: float = 0.0
    requires: frozenset[str] = frozenset()

    def __init__(self, actor_dim: int, object_dim: int, num_classes: int, *, hidden_dim: int = 512,
                 num_layers: int = 2, nl_dropout: float = 0.2, feat_dropout: float = 0.2,
                 dropout: float = 0.5):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"sto: num_layers must be >= 1, got {num_layers}")
        self.reduce = nn.Sequential(nn.Linear(actor_dim, hidden_dim), nn.Dropout(feat_dropout))
        self.blocks = nn.ModuleList(NonLocalBlock(hidden_dim, dropout=nl_dropout) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(actor_dim + hidden_dim, num_classes)

    def forward(self, x: HeadInput) -> Tensor:
        s = self.reduce(x.actor_feat)  # (A, d)
        mask = same_keyframe_mask(x.actor_kf, x.actor_kf)  # (A, A)
        for block in self.blocks:
            s = block(s, s, mask)
        return self.classifier(self.dropout(torch.cat((x.actor_feat, s), dim=1)))
