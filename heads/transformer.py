"""S-only / T-only transformer relation heads (Feng et al., AVA-Kinetics 2021 report, Sec. 2.2-2.3).

Each person i has a set of tokens: T-only uses its temporal sequence x.actor_temporal (A, T, C)
(one token per time step t, already spatially pooled); S-only uses its RoI map x.actor_roi
(A, C, k, k) flattened to k*k tokens (one per spatial cell, already temporally pooled). For every
token position p, the sequence {token_p of person i | i in the keyframe} is fed to a transformer
encoder block; the blocks of all positions share weights. The outputs are averaged over positions
and classified. There is no positional embedding: persons form a set (the output is
permutation-equivariant across actors), and positions are independent sequences with shared
weights (permuting the positions of *every* person the same way changes nothing, while moving
one person's tokens against the others' does).

Memory bank (Sec. 2.3, `bank_window` > 0): the tokens (at the same position p) of every person
of the same video's keyframes within +-bank_window/2 seconds (other keyframes only) are
concatenated to each sequence as extra keys/values. They are read-only memory: each block
updates the current keyframe's tokens only and always sees the bank's input tokens, so the
output of a keyframe depends on its window and nothing else. The bank is taken from the actors
present in the batch (query or not): with a frozen backbone, the cached features *are* the
bank the paper fills by a separate extraction pass (its two-stage training).

Defaults: the report gives no widths; we use d_model 512, 8 heads, feed-forward 1024, dropout
0.1, one encoder block (the report: "a transformer encoder block"). T-only uses the bank by
default with LFB's 60 s window (the report does not state its window); S-only has no bank (the
report trains S-only without memory because of its size). The report fuses person features with
the video feature map before the relation module; here the cached person tokens are used as is.
The report feeds the averaged tokens to "full-connected layers": `fc_layers` (default 2) counts
them, the last being the classifier. The decoupled class-balanced re-training of the classifier (Sec. 2.4) is the training loop's
job: `classifier_parameters()` (HeadBase's default, the submodule `classifier`) returns the
parameters it should train.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batch import HeadInput
from .common import query_rows_only, same_keyframe_mask, window_mask
from .protocol import HeadBase


class EncoderBlock(nn.Module):
    """Post-norm transformer encoder block (Vaswani et al.) whose keys/values may include memory."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, h: Tensor, kv: Tensor, blocked: Tensor) -> Tensor:
        """h (P, A, d) queries, kv (P, M, d), blocked (A, M) bool: True where attention is not allowed."""
        a, _ = self.self_attn(h, kv, kv, attn_mask=blocked, need_weights=False)
        h = self.norm1(h + self.drop1(a))
        ff = self.linear2(self.drop(F.relu(self.linear1(h))))
        return self.norm2(h + self.drop2(ff))


class TransformerRelationHead(HeadBase):
    def __init__(self, actor_dim: int, object_dim: int, num_classes: int, *, tokens: str,
                 token_dim: int | None = None, d_model: int = 512, nhead: int = 8,
                 dim_feedforward: int = 1024, num_layers: int = 1, dropout: float = 0.1,
                 bank_window: float = 0.0, classifier_dropout: float = 0.5, fc_layers: int = 2):
        super().__init__()
        if tokens not in ("temporal", "spatial"):
            raise ValueError(f"transformer head: tokens must be 'temporal' or 'spatial', got {tokens!r}")
        if num_layers < 1:
            raise ValueError(f"transformer head: num_layers must be >= 1, got {num_layers}")
        if bank_window < 0:
            raise ValueError(f"transformer head: bank_window must be >= 0 seconds, got {bank_window}")
        if fc_layers < 1:
            raise ValueError(f"transformer head: fc_layers must be >= 1, got {fc_layers}")
        self.tokens = tokens
        self.token_dim = actor_dim if token_dim is None else token_dim
        self.bank_window = float(bank_window)
        self.temporal_radius = self.bank_window / 2
        self.requires = frozenset({"temporal" if tokens == "temporal" else "roi"})
        self.embed = nn.Linear(self.token_dim, d_model)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, nhead, dim_feedforward, dropout)
                                    for _ in range(num_layers))
        # Fully-connected layers before the classifier (fc_layers - 1 of them, width d_model). The
        # position average is a sum of per-token outputs, so with a lone linear classifier the score
        # would be additive over time steps / cells: no "sit, then stand" interaction could be read.
        fc: list[nn.Module] = []
        for _ in range(fc_layers - 1):
            fc += [nn.Dropout(classifier_dropout), nn.Linear(d_model, d_model), nn.ReLU(inplace=True)]
        self.fc = nn.Sequential(*fc)
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(d_model, num_classes)

    def _tokens(self, x: HeadInput) -> Tensor:
        """(P, A, C) tokens, positions first."""
        if self.tokens == "temporal":
            if x.actor_temporal is None:
                raise ValueError("tonly needs x.actor_temporal (A, T, C): the store's actor_temporal level")
            t = x.actor_temporal.transpose(0, 1)  # (T, A, C)
        else:
            if x.actor_roi is None:
                raise ValueError("sonly needs x.actor_roi (A, C, k, k): the store's actor_roi level")
            t = x.actor_roi.flatten(2).permute(2, 0, 1)  # (k*k, A, C)
        if t.shape[-1] != self.token_dim:
            raise ValueError(f"{'tonly' if self.tokens == 'temporal' else 'sonly'}: tokens have "
                             f"{t.shape[-1]} channels, head built with token_dim={self.token_dim}")
        return t

    def forward(self, x: HeadInput) -> Tensor:
        # Only the query keyframes' actors are updated and classified: with a 60 s bank a batch holds
        # whole videos, and the other actors are needed as memory only (HeadInput: placeholder rows).
        q = x.is_query.nonzero(as_tuple=True)[0]  # (Q,)
        tokens = self.embed(self._tokens(x))  # (P, A, d)
        h = tokens[:, q]  # (P, Q, d)
        q_kf = x.actor_kf[q]
        allowed = same_keyframe_mask(q_kf, q_kf)  # (Q, Q)
        if self.bank_window > 0:
            bank = window_mask(x.kf_video, x.kf_time, q_kf, x.actor_kf, self.temporal_radius,
                               exclude_same=True)  # (Q, A)
            mem = tokens  # the bank: every person's input tokens, never updated
            blocked = ~torch.cat((allowed, bank), dim=1)  # (Q, Q + A)
            for block in self.blocks:
                h = block(h, torch.cat((h, mem), dim=1), blocked)
        else:
            for block in self.blocks:
                h = block(h, h, ~allowed)
        logits = self.classifier(self.dropout(self.fc(h.mean(dim=0))))  # (Q, L)
        return query_rows_only(logits, q, x.num_actors)  # (A, L)

def build_tonly(actor_dim: int, object_dim: int, num_classes: int, *, bank_window: float = 60.0,
                **kw) -> TransformerRelationHead:
    return TransformerRelationHead(actor_dim, object_dim, num_classes, tokens="temporal",
                                   bank_window=bank_window, **kw)


def build_sonly(actor_dim: int, object_dim: int, num_classes: int, *, bank_window: float = 0.0,
                **kw) -> TransformerRelationHead:
    return TransformerRelationHead(actor_dim, object_dim, num_classes, tokens="spatial",
                                   bank_window=bank_window, **kw)
