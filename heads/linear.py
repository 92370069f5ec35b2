"""`LinearHead`: the frozen-backbone baseline (dropout + one linear classifier on the actor feature).

This is what the STAGE paper calls "Original Backbone" / "a linear classifier on top of
pre-extracted features" (Tables 5 and 8): no relations, no context, one keyframe at a time.

Dropout default 0.5: PySlowFast's AVA configs (e.g. SLOWFAST_32x2_R101_50_50.yaml) train the
ResNetRoIHead with `MODEL.DROPOUT_RATE: 0.5` before its projection layer; we mirror that head.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .batch import HeadInput
from .protocol import HeadBase


class LinearHead(HeadBase):
    """Dropout then `nn.Linear(actor_dim, num_classes)` on `x.actor_feat`.

    `object_dim` is accepted (every head takes it) and ignored: this head uses no objects.
    """

    temporal_radius: float = 0.0
    requires: frozenset[str] = frozenset()

    def __init__(self, actor_dim: int, object_dim: int, num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        if actor_dim <= 0 or num_classes <= 0:
            raise ValueError(f"LinearHead: actor_dim ({actor_dim}) and num_classes ({num_classes}) must be > 0")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LinearHead: dropout must be in [0, 1), got {dropout}")
        self.actor_dim = actor_dim
        self.object_dim = object_dim
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(actor_dim, num_classes)

    def forward(self, x: HeadInput) -> Tensor:
        feat = x.actor_feat  # (A, C_a)
        if feat.dim() != 2 or feat.shape[1] != self.actor_dim:
            raise ValueError(
                f"LinearHead: actor_feat must be (A, {self.actor_dim}), got {tuple(feat.shape)}"
            )
        return self.classifier(self.dropout(feat))  # (A, num_classes)
