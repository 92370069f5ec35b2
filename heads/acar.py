"""ACAR-Net: actor-context-actor relations (Pan et al., CVPR 2021), on cached features.

1. First-order actor-context relations (ACRN-style, Sec. 3.2): the actor feature (reduced to
   `reduce_dim` = 1024) is tiled over its keyframe's context map (reduced by a 1x1 conv to
   `reduce_dim`), concatenated, and encoded by a 1x1 conv to `hidden_dim` = 512 (d in the paper)
   + ReLU and a 3x3 conv + ReLU: F^i (A, 512, H, W).
2. HR²O, two stacked modified non-local blocks (Eq. 1-2): Q, K, V by 3x3 convs; at every spatial
   location actor i attends over the actors j of the *same keyframe*,
   Att^{ij}_{xy} = softmax_j(<Q^i_xy, K^j_xy> / sqrt(d)); H~^i = sum_j Att^{ij} V^j;
   H^i = Dropout(Conv(ReLU(LayerNorm(H~^i)))) with LayerNorm over (C, H, W); F^i <- F^i + H^i.
   `hr2o="rn"` uses the Relation Network instantiation instead (Eq. 3-4):
   H^{ij}_xy = f_theta([A^i, A^j, X_xy]) (two convs), H^i = mean_j H^{ij}, F'^i = F^i + H^i.
3. Classifier: [actor feature; global average (or max, `pool`) of F'^i] -> dropout -> one linear
   layer.

ACFB (Sec. 3.3), `bank=True`: queries come from the current keyframe's first-order maps, keys
and values from a bank of first-order maps within +-bank_window/2 seconds (21 s window = +-10 s
by default; the current keyframe is in its own window) of the same video (Eq. 5).
Bank inputs (both required when `bank=True`):
  x.extras["bank_maps"]: (M, hidden_dim, H, W) float, first-order maps L^j;
  x.extras["bank_kf"]:   (M,) long, index into the batch keyframe arrays (video/time of entry j).
Two-stage flow (glued by the training loop): (a) train an ACAR head with `bank=False`;
(b) run its `first_order_maps(x)` over every keyframe of the split and write the maps, one row
per actor, into a derived store group (e.g. "acfb/actor_maps"); (c) train a fresh head with
`bank=True`, feeding for each batch the stored maps of the actors of all batch keyframes as
`bank_maps` with their `actor_kf` as `bank_kf` (`temporal_radius` makes the pipeline include those
keyframes). The bank is not updated while training, as in the paper.

Options outside the paper (defaults are the paper's), measured on the synthetic relational store
(BENCHMARKS.md, "All heads on one synthetic store"): the first-order encoder has no location input in
the paper, so where the actor feature carries no position (cached pooled features) it cannot tell
a cup in the actor's hand from one across the room. `location=True` adds ACRN's location embedding
(box, cell coordinates, box raster; `relative_location` adds the offset from the box centre) as an
extra slice of conv1; `tile_actor=False` leaves the tiled actor feature out of conv1 (the
first-order relation then sees the actor through its box only, which needs `location`; the
relation network of `hr2o="rn"` still sees the actor features, as Eq. 3 says); `pool="max"`
max-pools F'^i before the classifier. In the paper's form acar / acar_rn gain 4 / 2 points over
`linear` on the person-object classes there (they fit the training videos instead); with
`location, relative_location, tile_actor=False, pool="max"`, 14 / 37 points.

Deviations: the backbone is frozen and actor features are the cached pooled features (the paper
max-pools RoIAligned maps of a fine-tuned backbone); the 3x3 conv of the first-order encoder
keeps the resolution (stride 1), because cached context maps are small already.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .acrn import location_channels, num_location_channels
from .batch import HeadInput
from .common import SPATIAL_POOLS, check_pool, masked_softmax, window_mask
from .protocol import Attention, HeadBase


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous. torch's CPU bmm runs its
    backward one batch element at a time (a clone each) when the output's gradient has a stride-1
    batch dimension, as the gradient of a (HW, N, d) -> (N, d, H, W) permute does: one copy
    instead (ACAR's spatial attention forward + backward 4.7x faster, torch 2.14)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous()


def spatial_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor,
                      record: list[Tensor] | None = None) -> Tensor:
    """Attention computed separately at every spatial location.

    q (N, d, H, W), k/v (M, d, H, W), mask (N, M) -> (N, d, H, W):
    out^i_xy = sum_j softmax_j(<q^i_xy, k^j_xy> / sqrt(d)) v^j_xy over j with mask[i, j].
    `record`, when given, receives the weights Att (H, W, N, M) (detached).
    """
    n, d, hh, ww = q.shape
    # One batched matmul per product with the locations as the batch, on contiguous operands.
    qs, ks, vs = (t.flatten(2).permute(2, 0, 1).contiguous() for t in (q, k, v))  # (HW, N or M, d)
    att = torch.bmm(qs, ks.transpose(1, 2)) / math.sqrt(d)  # (HW, N, M)
    att = masked_softmax(att, mask[None])
    if record is not None:
        record.append(att.detach().view(hh, ww, n, -1))
    out = _ContiguousGrad.apply(torch.bmm(att, vs))  # (HW, N, d)
    return out.permute(1, 2, 0).reshape(n, d, hh, ww)


class HR2OBlock(nn.Module):
    """One modified non-local block of HR²O (Eq. 1-2)."""

    def __init__(self, dim: int, *, kernel_size: int = 3, dropout: float = 0.2):
        super().__init__()
        p = kernel_size // 2
        self.q = nn.Conv2d(dim, dim, kernel_size, padding=p)
        self.k = nn.Conv2d(dim, dim, kernel_size, padding=p)
        self.v = nn.Conv2d(dim, dim, kernel_size, padding=p)
        self.norm = nn.GroupNorm(1, dim)  # one group = LayerNorm over (C, H, W) per actor
        self.out = nn.Conv2d(dim, dim, kernel_size, padding=p)
        self.dropout = nn.Dropout(dropout)

    def forward(self, f: Tensor, mem: Tensor, mask: Tensor, record: list[Tensor] | None = None) -> Tensor:
        """f (N, d, H, W) queries, mem (M, d, H, W) keys/values, mask (N, M) -> (N, d, H, W);
        `record` receives the attention weights (see spatial_attention)."""
        h = spatial_attention(self.q(f), self.k(mem), self.v(mem), mask, record)
        h = self.dropout(self.out(F.relu(self.norm(h))))
        # An actor with no key (e.g. an empty bank window) receives no message.
        return f + h * mask.any(dim=1).to(h.dtype)[:, None, None, None]


class RelationNetworkHR2O(nn.Module):
    """The Relation Network instantiation (Eq. 3-4): H^i = mean_j f_theta([A^i, A^j, X]).

    f_theta is a 1x1 conv + ReLU + 3x3 conv. Its first conv is linear in the concatenation, so it
    is computed as W_i A^i + W_j A^j + W_x X without materialising the N^2 triplets' input.
    """

    def __init__(self, actor_dim: int, context_dim: int, dim: int, *, kernel_size: int = 3):
        super().__init__()
        self.w_i = nn.Linear(actor_dim, dim)
        self.w_j = nn.Linear(actor_dim, dim, bias=False)
        self.w_x = nn.Conv2d(context_dim, dim, 1, bias=False)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2)

    def forward(self, a: Tensor, actor_kf: Tensor, context: Tensor) -> Tensor:
        """a (A, C_a) actor features, context (K, C, H, W) -> (A, dim, H, W)."""
        xs = self.w_x(context)  # (K, d, H, W)
        ai, aj = self.w_i(a), self.w_j(a)  # (A, d)
        out = xs.new_zeros((a.shape[0],) + xs.shape[1:])
        for kf in torch.unique(actor_kf).tolist():
            idx = (actor_kf == kf).nonzero(as_tuple=True)[0]
            n = idx.numel()
            pre = ai[idx][:, None, :, None, None] + aj[idx][None, :, :, None, None] + xs[kf][None, None]
            h = self.conv2(F.relu(pre).flatten(0, 1))  # (n*n, d, H, W)
            out[idx] = h.view(n, n, *h.shape[1:]).mean(dim=1)  # Eq. 4: average over j
        return out


class ACARHead(HeadBase):
    requires: frozenset[str] = frozenset({"context"})
    has_first_order_maps = True

    def __init__(self, actor_dim: int, object_dim: int, num_classes: int, *,
                 context_dim: int | None = None, reduce_dim: int = 1024, hidden_dim: int = 512,
                 hr2o: str = "nl", num_layers: int = 2, kernel_size: int = 3, nl_dropout: float = 0.2,
                 dropout: float = 0.5, bank: bool = False, bank_window: float = 21.0,
                 location: bool = False, relative_location: bool = False, tile_actor: bool = True,
                 pool: str = "avg"):
        super().__init__()
        check_pool("acar", pool)
        if relative_location and not location:
            raise ValueError("acar: relative_location=True needs location=True")
        if not tile_actor and not location:
            raise ValueError("acar: tile_actor=False needs location=True, or the first-order "
                             "relation would not depend on the actor at all")
        if hr2o not in ("nl", "rn"):
            raise ValueError(f"acar: hr2o must be 'nl' or 'rn', got {hr2o!r}")
        if bank and hr2o != "nl":
            raise ValueError("acar: the actor-context feature bank (bank=True) needs hr2o='nl'")
        if num_layers < 1:
            raise ValueError(f"acar: num_layers must be >= 1, got {num_layers}")
        if bank_window < 0:
            raise ValueError(f"acar: bank_window must be >= 0 seconds, got {bank_window}")
        context_dim = actor_dim if context_dim is None else context_dim
        self.context_dim = context_dim
        self.hidden_dim = hidden_dim
        self.hr2o_kind = hr2o
        self.pool = pool
        self.relative_location = relative_location
        self.bank = bool(bank)
        self.bank_window = float(bank_window)
        self.temporal_radius = self.bank_window / 2 if self.bank else 0.0

        self.actor_reduce = nn.Linear(actor_dim, reduce_dim)
        self.context_reduce = nn.Conv2d(context_dim, reduce_dim, 1)
        # conv1 (1x1) over [tile(A'); X'; location] split into its actor, context and location slices
        # (the bias sits in the actor slice, or in the context slice when the actor is not tiled).
        self.conv1_actor = nn.Linear(reduce_dim, hidden_dim) if tile_actor else None
        self.conv1_context = nn.Conv2d(reduce_dim, hidden_dim, 1, bias=not tile_actor)
        self.conv1_loc = (nn.Conv2d(num_location_channels(relative_location), hidden_dim, 1, bias=False)
                          if location else None)
        self.conv2 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1)
        if hr2o == "nl":
            self.blocks = nn.ModuleList(HR2OBlock(hidden_dim, kernel_size=kernel_size, dropout=nl_dropout)
                                        for _ in range(num_layers))
        else:
            self.rn = RelationNetworkHR2O(reduce_dim, reduce_dim, hidden_dim, kernel_size=kernel_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(actor_dim + hidden_dim, num_classes)

    def _reduced(self, x: HeadInput) -> tuple[Tensor, Tensor]:
        if x.context is None:
            raise ValueError("acar needs x.context (K, C, H, W): the store's kf_context level")
        if x.context.shape[1] != self.context_dim:
            raise ValueError(f"acar: context has {x.context.shape[1]} channels, head built with "
                             f"context_dim={self.context_dim}")
        return F.relu(self.actor_reduce(x.actor_feat)), F.relu(self.context_reduce(x.context))

    def first_order_maps(self, x: HeadInput) -> Tensor:
        """(A, hidden_dim, H, W): first-order actor-context relation maps F^i (what ACFB stores)."""
        a, ctx = self._reduced(x)
        return self._first_order(a, ctx, x.actor_kf, x.actor_box)

    def _first_order(self, a: Tensor, ctx: Tensor, actor_kf: Tensor, actor_box: Tensor) -> Tensor:
        f = self.conv1_context(ctx)[actor_kf]  # (A, d, H, W)
        if self.conv1_actor is not None:
            f = f + self.conv1_actor(a)[:, :, None, None]
        if self.conv1_loc is not None:
            h, w = ctx.shape[-2:]
            loc = location_channels(actor_box.to(ctx.dtype), h, w, self.relative_location)
            f = f + self.conv1_loc(loc)
        return F.relu(self.conv2(F.relu(f)))

    def forward(self, x: HeadInput) -> Tensor:
        return self._forward(x, None)

    def forward_with_attention(self, x: HeadInput) -> tuple[Tensor, Attention | None]:
        """(logits, Attention "spatial": Att (H, W, A, M) of every HR²O block); None with hr2o="rn"."""
        if self.hr2o_kind != "nl":
            return self(x), None
        maps: list[Tensor] = []
        logits = self._forward(x, maps)
        return logits, Attention("spatial", maps)

    def _forward(self, x: HeadInput, record: list[Tensor] | None) -> Tensor:
        a, ctx = self._reduced(x)
        f = self._first_order(a, ctx, x.actor_kf, x.actor_box)  # (A, d, H, W)
        if self.hr2o_kind == "rn":
            f = f + self.rn(a, x.actor_kf, ctx)
        elif self.bank:
            try:
                mem, mem_kf = x.extras["bank_maps"], x.extras["bank_kf"]
            except KeyError:
                raise ValueError('acar with bank=True needs x.extras["bank_maps"] (M, C, H, W) and '
                                 'x.extras["bank_kf"] (M,)') from None
            if mem.shape[1:] != f.shape[1:]:
                raise ValueError(f"acar: bank_maps have shape {tuple(mem.shape[1:])} per entry, "
                                 f"first-order maps have {tuple(f.shape[1:])}")
            mask = window_mask(x.kf_video, x.kf_time, x.actor_kf, mem_kf.long(), self.bank_window / 2)
            mem = mem.to(f.dtype)
            for block in self.blocks:
                f = block(f, mem, mask, record)
        else:
            mask = x.actor_kf[:, None] == x.actor_kf[None, :]  # HR²O: actors of the same keyframe
            for block in self.blocks:
                f = block(f, f, mask, record)
        pooled = SPATIAL_POOLS[self.pool](f)  # (A, d)
        return self.classifier(self.dropout(torch.cat((x.actor_feat, pooled), dim=1)))
