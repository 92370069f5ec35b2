"""Pieces shared by the relation heads: neighbour masks by (video, time), masked attention, the
LFB-style non-local block, a fast CPU dropout and ELU.

Neighbours are always found from the keyframe arrays (`kf_video`, `kf_time`) of a `HeadInput`,
never from positions in the batch, so that the output for a keyframe does not depend on which
other keyframes the data pipeline happened to put in the same batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stagecache.core.timekeys import TIME_EPS  # a neighbour exactly at the window edge must be in


def same_keyframe_mask(q_kf: Tensor, k_kf: Tensor) -> Tensor:
    """(Q,), (M,) keyframe indices -> (Q, M) bool: key belongs to the query's keyframe."""
    return q_kf[:, None] == k_kf[None, :]


def window_mask(kf_video: Tensor, kf_time: Tensor, q_kf: Tensor, k_kf: Tensor, radius: float,
                *, exclude_same: bool = False) -> Tensor:
    """(Q, M) bool: key keyframe is in the query keyframe's video and within `radius` seconds.

    `exclude_same` drops keys of the query's own keyframe (memory = other keyframes only).
    """
    qv, kv = kf_video[q_kf], kf_video[k_kf]
    qt, kt = kf_time[q_kf].double(), kf_time[k_kf].double()
    m = (qv[:, None] == kv[None, :]) & ((qt[:, None] - kt[None, :]).abs() <= radius + TIME_EPS)
    if exclude_same:
        m &= q_kf[:, None] != k_kf[None, :]
    return m


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over `dim` restricted to `mask`; all-masked slices give all-zero weights."""
    logits = logits.masked_fill(~mask, float("-inf"))
    # A slice with no valid entry would be NaN; give it zero weight instead (no message).
    any_valid = mask.any(dim=dim, keepdim=True)
    logits = torch.where(any_valid, logits, torch.zeros_like(logits))
    w = torch.softmax(logits, dim=dim)
    return w * mask.to(w.dtype)


def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Scaled dot-product attention. q (Q, d), k (M, d), v (M, d_v), mask (Q, M) -> (Q, d_v)."""
    att = (q @ k.t()) / math.sqrt(q.shape[-1])  # (Q, M)
    return masked_softmax(att, mask) @ v


class MaskDropout(nn.Dropout):
    """nn.Dropout (inverted, keep prob 1 - p) with the CPU mask drawn as `rand >= p`: the same
    distribution, ~3x faster than torch's CPU bernoulli_ (torch 2.14; a dropout on the 775k
    values of a STAGE layer: 8.0 ms, this 2.4 ms); other draws than torch's under one seed.
    On other devices it is torch's fused dropout."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        # Drawn at >= float32 (a bfloat16 uniform would round onto p), compared and scaled in place:
        # one buffer instead of three.
        dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        mask = torch.rand(x.shape, dtype=dt, device=x.device).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * mask.to(x.dtype)


class _CPUElu(torch.autograd.Function):
    """ELU (alpha 1) as max(x, exp(min(x, 0)) - 1) computed in float32 (for float32 and narrower
    inputs; `elu` sends float64 to F.elu); torch's ELU gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        xf = x.float()
        # exp(x) - 1 >= x for every x (convexity), equal only at 0, so the max picks x for x > 0.
        y = xf.clamp(max=0.0).exp_().sub_(1.0)
        ctx.save_for_backward(x)
        return torch.maximum(y, xf, out=y).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        # torch's own ELU gradient from the input (through exp, not expm1): exp(x) for x <= 0, else 1.
        return torch.ops.aten.elu_backward(grad, 1.0, 1, 1, False, x)


def elu(x: Tensor) -> Tensor:
    """F.elu (alpha 1). On the CPU in float32 and narrower it is computed through exp, in float32:
    torch 2.14's CPU float32 ELU (its expm1) is slow on some CPUs (the 1.5M values of a STAGE layer:
    17-22 ms on an AMD EPYC with AVX-512 against 1.9 ms this way; BENCHMARKS.md, sixth pass).
    exp(x) - 1 and expm1(x) differ by the exp's rounding near 1, at most half a float32 ulp of 1
    (6e-8, where ELU's value is itself near 0); the gradient is torch's ELU gradient, bit for bit.
    float64 and other devices use F.elu."""
    if x.device.type != "cpu" or x.dtype == torch.float64:
        return F.elu(x)
    return _CPUElu.apply(x)


class NonLocalBlock(nn.Module):
    """The non-local block of LFB's feature bank operator (Wu et al. 2019, FBO-NL).

    out = Dropout(W_out(ReLU(LayerNorm(softmax(theta(S) phi(L)^T / sqrt(d)) g(L))))); S' = S + out
    (S' = S for a query with no allowed key).
    LFB uses d = 512, layer normalisation, dropout 0.2 and a zero-initialised output projection
    (so a fresh block is the identity).
    """

    def __init__(self, dim: int, *, dropout: float = 0.2, zero_init: bool = True):
        super().__init__()
        self.theta = nn.Linear(dim, dim)
        self.phi = nn.Linear(dim, dim)
        self.g = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, s: Tensor, lt: Tensor, mask: Tensor) -> Tensor:
        """s (Q, d) short-term (queries), lt (M, d) bank, mask (Q, M) -> (Q, d)."""
        h = masked_attention(self.theta(s), self.phi(lt), self.g(lt), mask)  # (Q, d)
        h = self.dropout(self.out(F.relu(self.norm(h))))
        # A query without any key receives no message (rather than the bias of an empty one).
        return s + h * mask.any(dim=1, keepdim=True).to(h.dtype)


def query_rows_only(logits: Tensor, q: Tensor, num_actors: int) -> Tensor:
    """(Q, L) logits of the query actors `q` -> (A, L) with zero placeholder rows elsewhere."""
    return logits.new_zeros(num_actors, logits.shape[1]).index_copy(0, q, logits)


def keyframes_with(actor_kf: Tensor, is_query: Tensor) -> Tensor:
    """Sorted unique keyframe indices holding at least one query actor."""
    return torch.unique(actor_kf[is_query])


# Spatial pooling of (N, C, H, W) relation maps to (N, C), chosen by name.
SPATIAL_POOLS = {
    "avg": lambda x: x.mean(dim=(2, 3)),
    "max": lambda x: x.amax(dim=(2, 3)),
}


def check_pool(head: str, pool: str) -> None:
    if pool not in SPATIAL_POOLS:
        raise ValueError(f"{head}: unknown pool {pool!r}; valid: {', '.join(SPATIAL_POOLS)}")
