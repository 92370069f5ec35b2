"""`STAGELayer`: one graph-attention layer of `STAGEHead` (heads/stage.py, whose docstring gives the
model, the paper's equations and the choices where the paper is silent), and the zero-padding helpers
both use.

`FC2(h_i || h_j) = a_1.h_i + a_2.h_j + b` is computed from two per-node terms; edges are dense
blocks per linked keyframe pair (see `heads/graph_ops.py`), softmax and aggregation are segment
operations over those blocks. Softmax math runs in float32 or wider (autocast-safe).
A layer that computes few rows (the last one: the query actors) skips FC1 on the sending nodes:
with `h_j = W_k f_j + b_k` per head k, `a_2.h_j = (W_k^T a_2).f_j + a_2.b_k` and, as a row's
weights sum to 1, `sum_j W_ij h_j = W_k (sum_j W_ij f_j) + b_k`: the layer aggregates f (shared by
the heads) and applies W_k to the receiving rows only (`STAGELayer._folds`: when that needs under
half the multiply-adds; 20% fewer FLOPs per keyframe at the official size). Same outputs and
gradients up to rounding (tests/heads/test_stage_layer.py).
Zero-padded widths (`padded_dim`, `padded_head_dim`, chosen by `aligned_width`): the rows a layer
reads and writes carry d_f channels then zeros, each GAT head's features likewise; the weights are
padded with zeros on the fly (`pad_last`, `pad_rows`), so parameters keep the model's widths, and
LayerNorm and the dropout draws run on the real channels.
Parameter layout (for reference computations): head k uses rows [k*d_h, (k+1)*d_h) of `fc_h` (or
fc_q/fc_k/fc_v); `attn_w[k]` is FC2's weight over (h_i || h_j), `attn_b[k]` its bias.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import MaskDropout, elu
from .graph_ops import BlockGraph, acc_dtype, blocked_aggregate, blocked_softmax, compute_dtype, take, take_rows

FEATURE_EPS = 1e-4  # adjacency="feature": 1 / max(distance, FEATURE_EPS) for identical features
# GEMM widths are padded with zero channels to a multiple of ALIGN when that adds at most
# 1/MAX_PAD_SHARE of the width: MKL's AVX2 single-precision kernels ran a 1028-wide matmul (I3D's
# 1024 + 4 box channels) 1.07-1.5x slower per FLOP than a 1040-wide one (fc_h's forward and both
# gradients on 2500 rows, 1 thread, torch 2.14, an AMD EPYC; the higher figure on a loaded
# machine; BENCHMARKS.md, fifth pass), and tensor cores want multiples of 8 too.
ALIGN, MAX_PAD_SHARE = 16, 32


def aligned_width(width: int, multiple: int = 1) -> int:
    """`width` rounded up to `multiple` times the smallest integer that makes it a multiple of ALIGN,
    when that adds at most width / MAX_PAD_SHARE channels; else `width` (small widths: no padding).
    `multiple`: the number of equal parts (heads) the width is made of, each padded alike."""
    part = -(-width // multiple)
    step = ALIGN // math.gcd(ALIGN, multiple)
    padded = multiple * (-(-part // step) * step)
    return padded if (padded - width) * MAX_PAD_SHARE <= width else width


def pad_last(x: Tensor, to: int) -> Tensor:
    """x (..., C) -> (..., to) with zeros after its C channels (x itself when C == to)."""
    return x if x.shape[-1] == to else F.pad(x, (0, to - x.shape[-1]))


def pad_rows(weight: Tensor, to: int) -> Tensor:
    """A Linear's weight (out, in) -> (to, in): zero rows, so the extra outputs are 0 (bias padded by pad_last)."""
    return weight if weight.shape[0] == to else F.pad(weight, (0, 0, 0, to - weight.shape[0]))


class STAGELayer(nn.Module):
    """One graph-attention layer: `num_heads` heads, concat, FC, residual, LayerNorm."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        dropout: float,
        attention: str,
        adjacency: str,
        proximity: bool,
        leaky_slope: float,
        head_dim: int | None = None,
        official: bool = False,
        padded_dim: int | None = None,
        padded_head_dim: int | None = None,
    ):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads if head_dim is None else head_dim
        if self.head_dim < 1:
            raise ValueError(f"STAGE: feature dim {dim} too small for {num_heads} heads")
        # Widths of the computation (parameters keep the model's): node rows carry d_f channels and
        # zeros up to padded_dim, each GAT head's features zeros up to padded_head_dim (ALIGN above).
        self.padded_dim = dim if padded_dim is None else padded_dim
        self.padded_head_dim = self.head_dim if padded_head_dim is None else padded_head_dim
        self.padded = (self.padded_dim, self.padded_head_dim) != (dim, self.head_dim)
        if self.padded and (official or attention != "gat"):
            raise ValueError("STAGE: padded widths are for the default variant's GAT attention only")
        self.attention, self.adjacency, self.proximity = attention, adjacency, proximity
        self.leaky_slope, self.official = leaky_slope, official
        hd = num_heads * self.head_dim
        if official:
            # models/attention_layer.py: W (d, d_h) and a (2 d_h, 1) per head, no biases, both
            # xavier_uniform with gain 1.414 (bounds computed per head, as each is its own tensor).
            self.fc_h = nn.Linear(dim, hd, bias=False)
            bw = 1.414 * math.sqrt(6.0 / (dim + self.head_dim))
            ba = 1.414 * math.sqrt(6.0 / (2 * self.head_dim + 1))
            with torch.no_grad():
                self.fc_h.weight.uniform_(-bw, bw)
            self.attn_w = nn.Parameter(torch.empty(num_heads, 2 * self.head_dim).uniform_(-ba, ba))
            self.attn_b = None
            self.drop_in = nn.Dropout(dropout)  # models/gat.py: dropout on the layer input
        elif attention == "gat":
            self.fc_h = nn.Linear(dim, hd)  # FC1 of every head, stacked
            bound = 1.0 / math.sqrt(2 * self.head_dim)  # nn.Linear(2 d_h, 1) default init
            self.attn_w = nn.Parameter(torch.empty(num_heads, 2 * self.head_dim).uniform_(-bound, bound))
            self.attn_b = nn.Parameter(torch.empty(num_heads).uniform_(-bound, bound))
        else:
            self.fc_q = nn.Linear(dim, hd)
            self.fc_k = nn.Linear(dim, hd)
            self.fc_v = nn.Linear(dim, hd)
        # Official: torch's draws (the authors' code's, under one seed); default: the same
        # distribution, drawn faster on the CPU.
        self.drop = nn.Dropout(dropout) if official else MaskDropout(dropout)
        self.fc_out = nn.Linear(hd, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, f: Tensor, centres: Tensor, g: BlockGraph, rows: Tensor | None = None,
                record: list[Tensor] | None = None) -> Tensor:
        """f (N, D) -> (N, D), or (len(rows), D) for the nodes `rows` only when given (computed only
        for them after aggregation; their keyframes must be the graph's first `num_targets`);
        D = `padded_dim`: d_f channels, then zeros. `record`, when given, receives the blocked
        attention weights (P, H, n_max, n_max) (detached)."""
        n, nh, dh, dhp = f.shape[0], self.num_heads, self.head_dim, self.padded_head_dim
        r, out_index = g.n_max, (g.node_index if rows is None else g.node_index[rows])
        if rows is not None and record is None and rows.numel():
            # Only the slots up to the last one `rows` occupy are computed (actors come first in a
            # keyframe, so the last layer's query actors are the leading slots).
            r = int((out_index % g.n_max).max()) + 1
            out_index = out_index // g.n_max * r + out_index % g.n_max
        fold = rows is not None and self._folds(n, rows.numel(), g, r)
        if self.attention == "gat":
            fin = self.drop_in(f) if self.official else f
            # FC2(h_i || h_j) = a_1.h_i + a_2.h_j + b: one term per receiving and per sending node.
            cdt, acc = compute_dtype(f), acc_dtype(f.dtype)
            # Zero-padded to the computation's widths (zero weights on the zero channels), cast once.
            w = pad_last(self.attn_w.view(nh, 2, dh).to(cdt), dhp)  # (H, 2, d_hp)
            wt = self.fc_h.weight.to(cdt).view(nh, dh, -1)  # (H, d_h, d_f)
            if self.padded:
                wt = F.pad(wt, (0, self.padded_dim - self.dim, 0, dhp - dh))  # (H, d_hp, D)
            bias = None if self.fc_h.bias is None else pad_last(self.fc_h.bias.view(nh, dh), dhp)  # (H, d_hp)
            if fold:
                # a_k.(W_k f + b_k) = (W_k^T a_k).f + a_k.b_k: the terms without h, one matmul.
                u = torch.bmm(w, wt).transpose(0, 1).reshape(2 * nh, -1)
                ub = (bias.view(nh, 1, dhp) * w).sum(-1).T.reshape(-1)
                s = F.linear(fin, u, ub)
            else:
                h = F.linear(fin, wt.view(nh * dhp, -1), None if bias is None else bias.reshape(-1))  # (N, H*d_hp)
                # Per head a_1.h_i and a_2.h_j as one matmul with the block-diagonal (H*d_hp, 2H).
                eye = torch.eye(nh, dtype=w.dtype, device=w.device)
                s = h @ torch.einsum("hse,hk->hesk", w, eye).reshape(nh * dhp, 2 * nh)
                h = h.view(n, nh, dhp)
            s = s.to(acc)
            s_tgt, s_src = s[:, :nh], s[:, nh:]  # (N, H) each
            if self.attn_b is not None:
                s_src = s_src + self.attn_b.to(acc)
            st = g.to_padded(s_tgt).transpose(1, 2)[..., :r]  # (K, H, r)
            ss = g.to_padded(s_src).transpose(1, 2)  # (K, H, n_max)
            e = F.leaky_relu(take(st, g.pair_tgt)[..., :, None] + take(ss, g.pair_src)[..., None, :],
                             self.leaky_slope)
            # Folded: aggregate f itself, shared by the heads (each head's W_k applied after).
            vn = f.to(cdt) if fold else h.transpose(0, 1)  # (N, D) shared, or (H, N, d_hp) per head
        else:
            q = g.to_padded(self.fc_q(f).view(n, nh, dh)).transpose(1, 2)[:, :, :r]  # (K, H, r, d_h)
            k = g.to_padded(self.fc_k(f).view(n, nh, dh)).transpose(1, 2)
            e = torch.matmul(take(q, g.pair_tgt), take(k, g.pair_src).transpose(-1, -2))
            e = e.to(acc_dtype(q.dtype)) / math.sqrt(dh)
            vn = self.fc_v(f).view(n, nh, dh).transpose(0, 1)  # (H, N, d_h)

        # Adjacency A (P, 1 or H, r, n_max), float32.
        if self.adjacency == "feature":
            acc, vk = acc_dtype(vn.dtype), g.to_padded(vn.transpose(0, 1)).transpose(1, 2)  # (K, H, n_max, d_h)
            dist = torch.cdist(take(vk, g.pair_tgt)[:, :, :r].to(acc), take(vk, g.pair_src).to(acc),
                               compute_mode="donot_use_mm_for_euclid_dist")
            a = 1.0 / dist.clamp_min(FEATURE_EPS)
            a = torch.where(g.self_loop[:, None, :r], torch.ones_like(a), a)
        elif self.proximity:
            cp = g.to_padded(centres.to(acc_dtype(f.dtype)))  # (K, n_max, 2)
            diff = take(cp, g.pair_tgt)[:, :r, None, :] - take(cp, g.pair_src)[:, None, :, :]
            a = torch.exp(-torch.sqrt((diff * diff).sum(-1)))[:, None]  # Eq. 1
        else:
            a = None
        d = e if a is None else a * e  # Eq. 5 / 9
        wgt = blocked_softmax(d, g.mask[:, None, :r], g.pair_tgt, g.num_kf)  # Eq. 6, (P, H, r, n_max)
        if record is not None:
            record.append(wgt.detach())
        out = blocked_aggregate(wgt, vn, g)  # Eq. 7 before sigma, (H, K_t, r, F)
        out = out.reshape(nh, -1, out.shape[-1]).index_select(1, out_index)  # (H, N or len(rows), F)
        if fold:
            # sum_j W_ij (W_k f_j + b_k) = W_k (sum_j W_ij f_j) + b_k: a row's weights sum to 1.
            # (H, d_hp, D) x (H, D, R): W's gradient comes out in W's layout (no strided add).
            out = torch.bmm(wt.to(out.dtype), out.transpose(1, 2)).transpose(1, 2)
            out = out + bias.view(nh, 1, dhp).to(out.dtype)  # (H, len(rows), d_hp)
        if rows is not None:
            f = take_rows(f, rows)
        if self.official:
            # attention_layer.py: ELU(dropout(h')), one dropout call per head on its (N, d_h)
            # output, in head order (the same random draws as the official code under one seed).
            out = torch.cat([F.elu(self.drop(out[k])) for k in range(nh)], 1)  # (N, H*d_h)
            return self.norm(f + self.fc_out(out))
        # Dropout on the d_h real channels (the same draws as without padding), then zeros again.
        out = self.drop(elu(out[..., :dh] if dhp > dh else out)).transpose(0, 1)  # (N, H, d_h)
        out = pad_last(out, dhp).reshape(out.shape[0], nh * dhp)  # (N, H*d_hp)
        if not self.padded:
            return self.norm(f + self.fc_out(out))
        # fc_out's weight (d_f, H*d_h) -> (D, H*d_hp): zero rows, and zero columns per head, in one copy.
        w_out = F.pad(self.fc_out.weight.view(self.dim, nh, dh), (0, dhp - dh, 0, 0, 0, self.padded_dim - self.dim))
        y = f + F.linear(out, w_out.view(self.padded_dim, nh * dhp), pad_last(self.fc_out.bias, self.padded_dim))
        return pad_last(self.norm(y[:, : self.dim]), self.padded_dim)  # LayerNorm over the d_f channels

    def _folds(self, n: int, n_rows: int, g: BlockGraph, r: int) -> bool:
        """Whether to aggregate f and apply each head's FC1 after (the receiving rows' FC1 only)
        rather than FC1 on every sending node: for GAT attention with box or no adjacency (the
        feature adjacency needs every node's per-head features), when it needs under half the
        multiply-adds (its per-head matmuls, d_f-wide aggregation and the FC2 terms' weight-sized
        backward run well below one wide FC1's rate: at 3 actors + 5 objects per keyframe a
        first layer folding for 1% fewer multiply-adds was slower)."""
        if self.attention != "gat" or self.official or self.adjacency == "feature":
            return False
        k_t, s = g.pair_table.shape
        d, hd = self.dim, self.num_heads * self.head_dim
        plain = n * d * hd + k_t * r * s * g.n_max * hd
        folded = n_rows * d * hd + k_t * r * s * g.n_max * self.num_heads * d
        return 2 * folded < plain
