"""`STAGEHead`: Spatio-Temporal Attention on Graph Entities (Tomei et al., STAGE, sections 3-4).

Nodes are the actors and objects of every keyframe in the batch. Keyframes i and j are linked
iff they belong to the same video (`x.kf_video`) and `|kf_time_i - kf_time_j| <= (window // 2) *
time_step` (+1 ms); never by batch position, never across videos. All nodes of linked keyframes
are connected (the paper's fully connected clip graph extended over its temporal receptive field,
Fig. 3). Each layer: per head `h = FC1(f)` (floor(d_f / n_heads) wide), `E_ij = LeakyReLU_0.2(FC2(h_i
|| h_j))`, `D = A (.) E`, row softmax over connected nodes, `h'_i = ELU(sum_j W_ij h_j)`, dropout;
heads concatenated, FC back to d_f, residual, LayerNorm. A final linear layer classifies actors.

Implementation: `FC2(h_i || h_j) = a_1.h_i + a_2.h_j + b` is computed from two per-node terms;
edges are dense blocks per linked keyframe pair (see `heads/graph_ops.py`), softmax and
aggregation are segment operations over those blocks. Softmax math runs in float32 or wider (autocast-safe).

Choices where the paper is silent, and deviations (all deliberate):
- Masked softmax. The paper/official code softmax over the whole batch matrix `A (.) E`, where an
  unconnected pair has D = 0 and so still receives weight exp(0); the text intends zero weight
  for temporally distant entities (sec. 3.3), so we softmax over connected pairs only.
- Self-loops: a node is connected to itself with A_ii = 1 (exp(-0) in Eq. 1). They are kept in
  every ablation (also actor_actor=False / object_object=False), so no node has an empty
  neighbourhood. With adjacency="feature", Eq. 11 is infinite on the diagonal; we set A_ii = 1.
- Node features: backbone feature || [h, w, xc, yc] (when box_features); then one linear layer
  maps the larger of (actor_dim + 4, object_dim + 4) to the smaller, leaving the other unchanged
  (paper sec. 4); d_f = the smaller. Equal dims: no projection. use_objects=False: d_f =
  actor_dim + 4, no projection.
- The residual: heads give n_heads * floor(d_f / n_heads) <= d_f channels, the layer's FC maps
  them back to d_f, so the residual is always `f + FC(concat)` at width d_f; no projection needed.
- All nodes (actors and objects) are updated by every layer; only actors are classified (all
  actors of the batch; the training loop picks the query actors).
- Dropout (`dropout`, default 0.5 = keep prob 0.5) is applied to each head's output h'_i, as the
  paper says; no dropout on the attention weights or before the classifier.
- attention="dot" (Table 8, Eq. 10): per head Q, K, V projections (d_f -> floor(d_f / n_heads));
  E_ij = q_i.k_j / sqrt(d_k) (no LeakyReLU), then the same A (.) E, masked softmax, ELU, and the
  values V take the role of h.
- adjacency="feature" (Eq. 11): A_ij = 1 / max(||h_i - h_j||_2, FEATURE_EPS) on the per-head
  features being aggregated (h, or V for dot attention); FEATURE_EPS = 1e-4 guards identical
  features (then A = 1e4); the diagonal is 1 (above). Gradients flow through A.
- proximity=False: A_ij = 1 on connected pairs. temporal=False: links within a keyframe only
  (temporal_radius 0). actor_actor / object_object=False drop those edges (not self-loops).
- temporal_radius = num_layers * (window // 2) * time_step: each stacked layer widens the
  receptive field by one link (sec. 3.3), so centre outputs are exact when the data pipeline
  includes every keyframe within that radius.
- Parameter layout (for reference computations): head k uses rows [k*d_h, (k+1)*d_h) of
  `fc_h` (or fc_q/fc_k/fc_v); `attn_w[k]` is FC2's weight over (h_i || h_j), `attn_b[k]` its bias.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batch import HeadInput, box_centres, box_geometry
from .graph_ops import BlockGraph, acc_dtype, blocked_aggregate, blocked_softmax, build_block_graph, link_keyframes

FEATURE_EPS = 1e-4


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
    ):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        if self.head_dim < 1:
            raise ValueError(f"STAGE: feature dim {dim} too small for {num_heads} heads")
        self.attention, self.adjacency, self.proximity = attention, adjacency, proximity
        self.leaky_slope = leaky_slope
        hd = num_heads * self.head_dim
        if attention == "gat":
            self.fc_h = nn.Linear(dim, hd)  # FC1 of every head, stacked
            bound = 1.0 / math.sqrt(2 * self.head_dim)  # nn.Linear(2 d_h, 1) default init
            self.attn_w = nn.Parameter(torch.empty(num_heads, 2 * self.head_dim).uniform_(-bound, bound))
            self.attn_b = nn.Parameter(torch.empty(num_heads).uniform_(-bound, bound))
        else:
            self.fc_q = nn.Linear(dim, hd)
            self.fc_k = nn.Linear(dim, hd)
            self.fc_v = nn.Linear(dim, hd)
        self.drop = nn.Dropout(dropout)
        self.fc_out = nn.Linear(hd, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, f: Tensor, centres: Tensor, g: BlockGraph, keep: int | None = None) -> Tensor:
        """f (N, d_f) -> (N, d_f); only the first `keep` rows are returned (and computed after
        aggregation) when given: the last layer needs just the actors, which come first."""
        n, nh, dh = f.shape[0], self.num_heads, self.head_dim
        if self.attention == "gat":
            h = self.fc_h(f).view(n, nh, dh)  # (N, H, d_h)
            w = self.attn_w.view(nh, 2, dh).to(h.dtype)
            # FC2(h_i || h_j) = a_1.h_i + a_2.h_j + b: one term per receiving and per sending node.
            acc = acc_dtype(h.dtype)
            s_tgt = torch.einsum("nhd,hd->nh", h, w[:, 0]).to(acc)  # (N, H)
            s_src = torch.einsum("nhd,hd->nh", h, w[:, 1]).to(acc) + self.attn_b.to(acc)
            st = g.to_padded(s_tgt).transpose(1, 2)  # (K, H, n_max)
            ss = g.to_padded(s_src).transpose(1, 2)
            e = F.leaky_relu(st[g.pair_tgt][..., :, None] + ss[g.pair_src][..., None, :], self.leaky_slope)
            v = h
        else:
            q = g.to_padded(self.fc_q(f).view(n, nh, dh)).transpose(1, 2)  # (K, H, n_max, d_h)
            k = g.to_padded(self.fc_k(f).view(n, nh, dh)).transpose(1, 2)
            e = torch.matmul(q[g.pair_tgt], k[g.pair_src].transpose(-1, -2)).to(acc_dtype(q.dtype)) / math.sqrt(dh)
            v = self.fc_v(f).view(n, nh, dh)
        vp = g.to_padded(v).transpose(1, 2)  # (K, H, n_max, d_h)

        # Adjacency A (P, 1 or H, n_max, n_max), float32.
        if self.adjacency == "feature":
            acc = acc_dtype(vp.dtype)
            dist = torch.cdist(vp[g.pair_tgt].to(acc), vp[g.pair_src].to(acc),
                               compute_mode="donot_use_mm_for_euclid_dist")
            a = 1.0 / dist.clamp_min(FEATURE_EPS)
            a = torch.where(g.self_loop[:, None], torch.ones_like(a), a)
        elif self.proximity:
            cp = g.to_padded(centres.to(acc_dtype(f.dtype)))  # (K, n_max, 2)
            diff = cp[g.pair_tgt][:, :, None, :] - cp[g.pair_src][:, None, :, :]
            a = torch.exp(-torch.sqrt((diff * diff).sum(-1)))[:, None]  # Eq. 1
        else:
            a = None
        d = e if a is None else a * e  # Eq. 5 / 9
        wgt = blocked_softmax(d, g.mask[:, None], g.pair_tgt, g.num_kf)  # Eq. 6, (P, H, n_max, n_max)
        out = F.elu(blocked_aggregate(wgt, vp, g))  # Eq. 7, (K, H, n_max, d_h)
        out = g.from_padded(out.transpose(1, 2))  # (N, H, d_h)
        if keep is not None:
            out, f = out[:keep], f[:keep]
        out = self.drop(out).reshape(out.shape[0], nh * dh)
        return self.norm(f + self.fc_out(out))


class STAGEHead(nn.Module):
    """STAGE relation head over actors and objects of linked keyframes; see the module docstring."""

    def __init__(
        self,
        actor_dim: int,
        object_dim: int,
        num_classes: int,
        *,
        num_layers: int = 2,
        num_heads: int = 2,
        window: int = 3,
        time_step: float = 1.0,
        dropout: float = 0.5,
        use_objects: bool = True,
        proximity: bool = True,
        temporal: bool = True,
        actor_actor: bool = True,
        object_object: bool = True,
        attention: str = "gat",
        adjacency: str = "box",
        box_features: bool = True,
        leaky_slope: float = 0.2,
    ):
        super().__init__()
        if attention not in ("gat", "dot"):
            raise ValueError(f"STAGE: attention must be 'gat' or 'dot', got {attention!r}")
        if adjacency not in ("box", "feature"):
            raise ValueError(f"STAGE: adjacency must be 'box' or 'feature', got {adjacency!r}")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"STAGE: window must be an odd number >= 1 (3 = t-1, t, t+1), got {window}")
        if num_layers < 1 or num_heads < 1:
            raise ValueError(f"STAGE: num_layers ({num_layers}) and num_heads ({num_heads}) must be >= 1")
        if time_step <= 0:
            raise ValueError(f"STAGE: time_step must be > 0 seconds, got {time_step}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"STAGE: dropout must be in [0, 1), got {dropout}")
        if use_objects and object_dim <= 0:
            raise ValueError("STAGE: there are no object features (object_dim 0): extract objects "
                             "(extract features --objects ...) or train with --head-arg use_objects=false")
        if actor_dim <= 0 or num_classes <= 0:
            raise ValueError(
                f"STAGE: actor_dim ({actor_dim}), object_dim ({object_dim}), num_classes ({num_classes}) must be > 0"
            )
        self.actor_dim, self.object_dim, self.num_classes = actor_dim, object_dim, num_classes
        self.use_objects, self.temporal, self.box_features = use_objects, temporal, box_features
        self.actor_actor, self.object_object = actor_actor, object_object
        self.window, self.time_step = window, time_step
        self.link_radius = (window // 2) * time_step if temporal else None
        self.temporal_radius = float(num_layers * (window // 2) * time_step) if temporal else 0.0
        self.requires = frozenset({"objects"}) if use_objects else frozenset()

        extra = 4 if box_features else 0
        da, do = actor_dim + extra, object_dim + extra
        self.actor_proj = self.object_proj = None
        if use_objects and da > do:
            self.actor_proj = nn.Linear(da, do)
        elif use_objects and do > da:
            self.object_proj = nn.Linear(do, da)
        self.dim = min(da, do) if use_objects else da  # d_f
        self.layers = nn.ModuleList(
            STAGELayer(self.dim, num_heads, dropout=dropout, attention=attention, adjacency=adjacency,
                       proximity=proximity, leaky_slope=leaky_slope)
            for _ in range(num_layers)
        )
        self.classifier = nn.Linear(self.dim, num_classes)

    def _check(self, x: HeadInput) -> None:
        if x.actor_feat.dim() != 2 or x.actor_feat.shape[1] != self.actor_dim:
            raise ValueError(f"STAGE: actor_feat must be (A, {self.actor_dim}), got {tuple(x.actor_feat.shape)}")
        if self.use_objects and (x.object_feat.dim() != 2 or x.object_feat.shape[1] != self.object_dim):
            raise ValueError(f"STAGE: object_feat must be (O, {self.object_dim}), got {tuple(x.object_feat.shape)}")

    def node_features(self, x: HeadInput) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Node features (N, d_f), box centres (N, 2), node keyframe (N,), is-actor (N,); actors first."""
        fa = x.actor_feat
        if self.box_features:
            fa = torch.cat((fa, box_geometry(x.actor_box).to(fa.dtype)), 1)  # (A, C_a + 4)
        if self.actor_proj is not None:
            fa = self.actor_proj(fa)
        feats, boxes, kfs = [fa], [x.actor_box], [x.actor_kf]
        if self.use_objects:
            fo = x.object_feat
            if self.box_features:
                fo = torch.cat((fo, box_geometry(x.object_box).to(fo.dtype)), 1)  # (O, C_o + 4)
            if self.object_proj is not None:
                fo = self.object_proj(fo)
            feats.append(fo.to(fa.dtype))
            boxes.append(x.object_box)
            kfs.append(x.object_kf)
        f = torch.cat(feats, 0)
        node_kf = torch.cat(kfs, 0).long()
        is_actor = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
        is_actor[: x.num_actors] = True
        return f, box_centres(torch.cat(boxes, 0)), node_kf, is_actor

    def build_graph(self, x: HeadInput, node_kf: Tensor, is_actor: Tensor) -> BlockGraph:
        tgt, src = link_keyframes(x.kf_video, x.kf_time, self.link_radius)
        return build_block_graph(node_kf, is_actor, x.num_keyframes, tgt, src,
                                 actor_actor=self.actor_actor, object_object=self.object_object)

    def forward(self, x: HeadInput) -> Tensor:
        self._check(x)
        f, centres, node_kf, is_actor = self.node_features(x)
        if x.num_actors == 0:
            return self.classifier(f[:0])  # (0, num_classes)
        g = self.build_graph(x, node_kf, is_actor)
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            f = layer(f, centres, g, keep=x.num_actors if last else None)
        return self.classifier(f)  # (A, num_classes)
