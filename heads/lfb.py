"""LFB: long-term feature bank with the non-local feature bank operator (Wu et al. 2019).

Short-term features S are the actors of the current keyframe; the long-term bank L holds the
actor features of every keyframe of the same video within +-window/2 seconds (the current
keyframe included, as in LFB). S and L are reduced to `hidden_dim` = 512 by separate linear
layers with dropout 0.2, then `num_layers` = 2 FBO-NL blocks (LayerNorm, dropout 0.2) update S
from L; the result is concatenated with the actor feature and classified (dropout 0.5).
The window default is LFB's 60 s (2w+1 ~ 60 s, i.e. +-30 s), so `temporal_radius` = 30.

Deviations, because the backbone is frozen and features are cached:
- the bank holds the raw pooled backbone features of the neighbouring keyframes' actors (all
  actors present in the batch, query or not) instead of features from a second, separately
  fine-tuned LFB backbone; with a frozen backbone the two coincide.
- LFB samples at most a few bank entries per second; here every actor within the window is used.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .batch import HeadInput
from .common import NonLocalBlock, query_rows_only, window_mask
from .protocol import HeadBase


class LFBHead(HeadBase):
    requires: frozenset[str] = frozenset()

    def __init__(self, actor_dim: int, object_dim: int, num_classes: int, *, hidden_dim: int = 512,
                 num_layers: int = 2, window: float = 60.0, nl_dropout: float = 0.2,
                 feat_dropout: float = 0.2, dropout: float = 0.5):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"lfb: num_layers must be >= 1, got {num_layers}")
        if window < 0:
            raise ValueError(f"lfb: window must be >= 0 seconds, got {window}")
        self.window = float(window)
        self.temporal_radius = self.window / 2
        self.st_reduce = nn.Sequential(nn.Linear(actor_dim, hidden_dim), nn.Dropout(feat_dropout))
        self.lt_reduce = nn.Sequential(nn.Linear(actor_dim, hidden_dim), nn.Dropout(feat_dropout))
        self.blocks = nn.ModuleList(NonLocalBlock(hidden_dim, dropout=nl_dropout) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(actor_dim + hidden_dim, num_classes)

    def forward(self, x: HeadInput) -> Tensor:
        # Only the query keyframes' actors are updated: the window pulls in whole stretches of video
        # whose actors serve as the bank only (HeadInput: other rows are placeholders).
        q = x.is_query.nonzero(as_tuple=True)[0]  # (Q,)
        a_q = x.actor_feat[q]  # (Q, C_a)
        s = self.st_reduce(a_q)  # (Q, d)
        lt = self.lt_reduce(x.actor_feat)  # (A, d): the bank is every actor of the batch
        mask = window_mask(x.kf_video, x.kf_time, x.actor_kf[q], x.actor_kf, self.temporal_radius)  # (Q, A)
        for block in self.blocks:
            s = block(s, lt, mask)
        logits = self.classifier(self.dropout(torch.cat((a_q, s), dim=1)))  # (Q, L)
        return query_rows_only(logits, q, x.num_actors)  # (A, L)
