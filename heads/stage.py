"""`STAGEHead`: Spatio-Temporal Attention on Graph Entities (Tomei et al., STAGE, sections 3-4).

Nodes are the actors and objects of every keyframe in the batch. Keyframes i and j are linked
iff they belong to the same video (`x.kf_video`) and `|kf_time_i - kf_time_j| <= (window // 2) *
time_step` (+1 ms); never by batch position, never across videos. All nodes of linked keyframes
are connected (the paper's fully connected clip graph extended over its temporal receptive field,
Fig. 3). Each layer: per head `h = FC1(f)` (floor(d_f / n_heads) wide), `E_ij = LeakyReLU_0.2(FC2(h_i
|| h_j))`, `D = A (.) E`, row softmax over connected nodes, `h'_i = ELU(sum_j W_ij h_j)`, dropout;
heads concatenated, FC back to d_f, residual, LayerNorm. A final linear layer classifies actors.

Each layer is a `STAGELayer` (heads/stage_layer.py: how it computes this, per-node FC2 terms on
blocked edges, and the fold that skips FC1 on the sending nodes of a layer computing few rows).
With GAT attention (default variant) wide layers are computed on zero-padded widths: node rows carry
d_f channels then zeros up to a multiple of 16, each head's features likewise (`aligned_width`,
only where that adds at most 1/32 of the width: 1028 -> 1040, 4 heads of 257 -> 260); the weights
are padded with zeros on the fly, so parameters, checkpoints and outputs keep the model's widths,
and LayerNorm and the dropout draws run on the real channels (tests/heads/test_stage.py, WIDE).
`align_widths=False` computes at the model's widths: the same outputs up to rounding.

Choices where the paper is silent, and deviations (all deliberate):
- Masked softmax. The paper's text computes attention "without any masking" (sec. 3.3) and Eq. 6
  sums over all entities, so taken literally an unconnected pair (A = 0, hence D = 0) would still
  get weight exp(0). The official code does not do that: models/attention_layer.py replaces D by
  -9e15 wherever the adjacency is 0 before the softmax, i.e. unconnected pairs get zero weight.
  We softmax over connected pairs only, which is the official behaviour (and the text's intent of
  weakening distant entities).
- Self-loops: a node is connected to itself with A_ii = 1 (exp(-0) in Eq. 1). They are kept in
  every ablation (also actor_actor=False / object_object=False), so no node has an empty
  neighbourhood. With adjacency="feature", Eq. 11 is infinite on the diagonal; we set A_ii = 1.
- Node features: backbone feature || [h, w, xc, yc] (when box_features); then one linear layer
  maps the larger of (actor_dim + 4, object_dim + 4) to the smaller, leaving the other unchanged
  (paper sec. 4); d_f = the smaller. Equal dims: no projection. use_objects=False: d_f =
  actor_dim + 4, no projection.
- The residual: heads give n_heads * floor(d_f / n_heads) <= d_f channels, the layer's FC maps
  them back to d_f, so the residual is always `f + FC(concat)` at width d_f; no projection needed.
- Only actors are classified, and only the query actors (`x.is_query`; the other rows of the
  output are zeros): each layer is computed only for the nodes a later layer reads (the last
  layer for the query actors, the one before for the nodes of keyframes linked to a query
  keyframe, ...), the same outputs as updating every node in every layer. `forward_with_attention`
  and variant="official" update every node in every layer (weights for the whole graph).
- Dropout (`dropout`, default 0.5 = keep prob 0.5) is applied to each head's output h'_i after
  the ELU, as the paper says ("each graph attention head is followed by a dropout"); no dropout on
  the attention weights or before the classifier.
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
- Parameter layout (for reference computations): heads/stage_layer.py.

variant="official" computes what the authors' code computes (aimagelab/STAGE_action_detection:
models/model.py, models/gat.py, models/attention_layer.py, data/collate_batch.py), and
`from_official_state_dict` (heads/stage_official.py) loads its checkpoints. Where the default
variant differs, and why:
- Neighbourhood. Official: batch item k is linked to items k-1 and k+1 by position in the batch
  (collate_batch.py), whatever their video and however far apart in time; a batch of 1 item fails
  there (we link it to itself). Default: linked by (video, |dt| <= (window // 2) * time_step), so
  an output does not depend on how keyframes were batched (the paper's "consecutive clips").
  Official: temporal_radius 0, the batch is the query keyframes in the order given.
- Widths. Official: d = actor_dim + 4 always; per head int(actor_dim / H) + int(4 / H) channels,
  which must add up to d (gat_fc is d x d: 2 or 4 heads for I3D's 1024). Default: d_f and
  floor(d_f / H) as in the paper's text, with fc_out mapping the concat back to d_f.
- Projections. Official: each head's W (FC1) and a (FC2) have no bias (the paper's "2 x d_h
  parameters" for FC2 agrees); xavier_uniform init with gain 1.414. Default: nn.Linear FC1 with
  bias and a bias on FC2 (`attn_b`); PyTorch's default init.
- Object reducer. Official: objects wider than actors go through Linear(object_dim, actor_dim)
  (with bias) and a ReLU before [h, w, xc, yc] are appended; narrower objects do not run there
  (refused). Default: one linear layer, no ReLU, on the wider of the two after the box features
  are appended (paper sec. 4: "the linear layer to the feature vector with the largest
  dimensionality").
- Dropout. Official (p = 0.5): on every layer's input (one mask for all heads) and on each head's
  aggregated output before the ELU; the residual adds the un-dropped input. Default: after the ELU
  on each head's output only (the paper's text).
- Masking: the same in both (see "Masked softmax" above); so are proximity exp(-||c_i - c_j||),
  LeakyReLU 0.2, the residual + LayerNorm per layer and the box descriptor [h, w, xc, yc].
- Outputs. Official: 81 logits (column 0 background, column c = AVA id c) trained with BCE on all
  81; here the classifier has one output per store label (from_official_state_dict keeps the rows
  of the store's ids), so the background logit is neither trained nor used (the official
  test.py drops it too). The official variant updates all nodes in the last layer as well (same
  actor outputs; it keeps the official dropout draws).
Options the official code has no counterpart for (attention, adjacency, proximity, box_features,
actor_actor, object_object) are refused with variant="official"; num_layers, num_heads, window
(links to the window // 2 neighbouring batch positions), temporal, dropout and use_objects apply.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batch import HeadInput, box_centres, box_geometry
from .graph_ops import (BlockGraph, build_block_graph, dense_attention, link_batch_positions, link_keyframes,
                        receptive_keyframes, take, take_rows, target_first_graph)
from .protocol import Attention, HeadBase
# FEATURE_EPS: adjacency="feature"'s guard, documented above, importable with the head.
from .stage_layer import FEATURE_EPS, STAGELayer, aligned_width, pad_last, pad_rows  # noqa: F401

VARIANTS = ("default", "official")


class STAGEHead(HeadBase):
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
        variant: str = "default",
        align_widths: bool = True,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"STAGE: unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if variant == "official":
            changed = [k for k, v, want in (("attention", attention, "gat"), ("adjacency", adjacency, "box"),
                                            ("proximity", proximity, True), ("box_features", box_features, True),
                                            ("actor_actor", actor_actor, True),
                                            ("object_object", object_object, True)) if v != want]
            if changed:
                raise ValueError(f"STAGE: variant=official is the authors' code, which has no option "
                                 f"{', '.join(changed)}; use the default variant for these ablations")
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

        self.variant = variant
        self.actor_proj = self.object_proj = self.object_reducer = None
        head_dim = None
        if variant == "official":
            # models/model.py: d = C_a + 4; objects reduced to C_a (ReLU) only when wider; head
            # width int(C_a / H) + int(4 / H), and the concatenated heads must be d wide (gat_fc is d x d).
            if use_objects and object_dim < actor_dim:
                raise ValueError(f"STAGE: variant=official reduces wider object features to the actor width only; "
                                 f"object_dim {object_dim} < actor_dim {actor_dim} does not run in the official "
                                 "code (use the default variant)")
            if use_objects and object_dim > actor_dim:
                self.object_reducer = nn.Linear(object_dim, actor_dim)
            self.dim = actor_dim + 4
            head_dim = actor_dim // num_heads + 4 // num_heads
            if head_dim * num_heads != self.dim:
                raise ValueError(f"STAGE: variant=official needs {num_heads} heads of int({actor_dim}/{num_heads}) + "
                                 f"int(4/{num_heads}) = {head_dim} channels to fill d = {self.dim} (the official code "
                                 "supports 2 or 4 heads); choose another num_heads")
            self.temporal_radius = 0.0  # neighbours are batch positions: the batch is the query keyframes
        else:
            extra = 4 if box_features else 0
            da, do = actor_dim + extra, object_dim + extra
            if use_objects and da > do:
                self.actor_proj = nn.Linear(da, do)
            elif use_objects and do > da:
                self.object_proj = nn.Linear(do, da)
            self.dim = min(da, do) if use_objects else da  # d_f
        # The computation's widths (ALIGN): node rows padded with zero channels, each head likewise.
        pad = align_widths and variant == "default" and attention == "gat"
        self.padded_dim = aligned_width(self.dim) if pad else self.dim
        head_dim_p = aligned_width(num_heads * (self.dim // num_heads), num_heads) // num_heads if pad else None
        self.layers = nn.ModuleList(
            STAGELayer(self.dim, num_heads, dropout=dropout, attention=attention, adjacency=adjacency,
                       proximity=proximity, leaky_slope=leaky_slope, head_dim=head_dim,
                       official=variant == "official", padded_dim=self.padded_dim,
                       padded_head_dim=head_dim_p)
            for _ in range(num_layers)
        )
        self.classifier = nn.Linear(self.dim, num_classes)

    def _check(self, x: HeadInput) -> None:
        if x.actor_feat.dim() != 2 or x.actor_feat.shape[1] != self.actor_dim:
            raise ValueError(f"STAGE: actor_feat must be (A, {self.actor_dim}), got {tuple(x.actor_feat.shape)}")
        if self.use_objects and (x.object_feat.dim() != 2 or x.object_feat.shape[1] != self.object_dim):
            raise ValueError(f"STAGE: object_feat must be (O, {self.object_dim}), got {tuple(x.object_feat.shape)}")

    def node_features(self, x: HeadInput) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Node features (N, `padded_dim`): d_f channels then zeros; box centres (N, 2), node
        keyframe (N,), is-actor (N,); actors first."""
        fa = x.actor_feat
        if self.box_features:
            fa = torch.cat((fa, box_geometry(x.actor_box).to(fa.dtype)), 1)  # (A, C_a + 4)
        fa = self._project(self.actor_proj, fa)
        feats, boxes, kfs = [fa], [x.actor_box], [x.actor_kf]
        if self.use_objects:
            fo = x.object_feat
            if self.object_reducer is not None:
                fo = F.relu(self.object_reducer(fo))  # (O, C_a), models/model.py
            if self.box_features:
                fo = torch.cat((fo, box_geometry(x.object_box).to(fo.dtype)), 1)  # (O, C_o + 4)
            feats.append(self._project(self.object_proj, fo).to(fa.dtype))
            boxes.append(x.object_box)
            kfs.append(x.object_kf)
        f = torch.cat(feats, 0)  # (N, padded_dim)
        node_kf = torch.cat(kfs, 0).long()
        is_actor = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
        is_actor[: x.num_actors] = True
        return f, box_centres(torch.cat(boxes, 0)), node_kf, is_actor

    def _project(self, proj: nn.Linear | None, f: Tensor) -> Tensor:
        """f (M, C) -> (M, padded_dim): `proj` (or none: C = d_f), zero channels after d_f."""
        if proj is None:
            return pad_last(f, self.padded_dim)
        return F.linear(f, pad_rows(proj.weight, self.padded_dim), pad_last(proj.bias, self.padded_dim))

    def _classify(self, f: Tensor) -> Tensor:
        """(M, padded_dim) -> (M, num_classes); the zero channels meet zero weights."""
        return F.linear(f, pad_last(self.classifier.weight, self.padded_dim), self.classifier.bias)

    def build_graph(self, x: HeadInput, node_kf: Tensor, is_actor: Tensor) -> BlockGraph:
        if self.variant == "official":
            tgt, src = link_batch_positions(x.num_keyframes, self.window // 2 if self.temporal else 0,
                                            x.kf_video.device)
        else:
            tgt, src = link_keyframes(x.kf_video, x.kf_time, self.link_radius)
        return build_block_graph(node_kf, is_actor, x.num_keyframes, tgt, src,
                                 actor_actor=self.actor_actor, object_object=self.object_object)

    def forward(self, x: HeadInput) -> Tensor:
        return self._forward(x, None)[0]

    def forward_with_attention(self, x: HeadInput) -> tuple[Tensor, Attention]:
        """(logits, Attention "graph": per layer the head-averaged weights (N, N) and the graph's
        connectivity (N, N) over the nodes of `node_features`, actors then objects)."""
        record: list[Tensor] = []
        logits, g = self._forward(x, record)
        dense = [dense_attention(g, wgt) for wgt in record]
        return logits, Attention("graph", [w for w, _ in dense], [c for _, c in dense])

    def _forward(self, x: HeadInput, record: list[Tensor] | None) -> tuple[Tensor, BlockGraph | None]:
        self._check(x)
        f, centres, node_kf, is_actor = self.node_features(x)
        if x.num_actors == 0:
            return self._classify(f[:0]), None  # (0, num_classes)
        if self.variant != "official" and record is None:
            return self._forward_pruned(x, f, centres, node_kf, is_actor), None
        g = self.build_graph(x, node_kf, is_actor)
        actors = torch.arange(x.num_actors, device=f.device)
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1 and self.variant != "official"  # official: every node, every layer
            f = layer(f, centres, g, rows=actors if last else None, record=record)
        return self._classify(f[: x.num_actors]), g  # (A, num_classes)

    def _forward_pruned(self, x: HeadInput, f: Tensor, centres: Tensor, node_kf: Tensor, is_actor: Tensor) -> Tensor:
        """The logits of the query actors (`x.is_query`; other rows are zeros, heads/batch.py), each
        layer computed only for the nodes a later layer reads: the last one for the query actors,
        the one before for every node of a keyframe linked to a query keyframe, and so on; a layer
        reads the nodes of the keyframes linked to its targets. Equal to the whole-batch
        computation on those rows (tests/heads/test_stage_pruned.py); training draws dropout masks for
        the computed rows only."""
        if not bool(x.is_query.any()):
            return self._classify(f[:0]).new_zeros((x.num_actors, self.num_classes))
        tgt, src = link_keyframes(x.kf_video, x.kf_time, self.link_radius)
        is_query = torch.zeros_like(is_actor)
        is_query[: x.num_actors] = x.is_query
        query_kf = torch.zeros(x.num_keyframes, dtype=torch.bool, device=f.device)
        query_kf[node_kf[is_query]] = True
        needs = receptive_keyframes(tgt, src, query_kf, len(self.layers))  # what layer l reads: needs[l]
        nodes = torch.nonzero(needs[0][node_kf]).flatten()  # (N_0,) the nodes f's rows hold
        f = take_rows(f, nodes)
        for i, layer in enumerate(self.layers):
            g = target_first_graph(node_kf[nodes], is_actor[nodes], needs[i], needs[i + 1], tgt, src,
                                   actor_actor=self.actor_actor, object_object=self.object_object)
            keep = needs[i + 1][node_kf[nodes]]
            if i == len(self.layers) - 1:
                keep = keep & is_query[nodes]
            rows = torch.nonzero(keep).flatten()
            f = layer(f, take(centres, nodes), g, rows=rows)
            nodes = nodes[rows]
        logits = self._classify(f)  # (A_q, num_classes); nodes are the query actors
        return logits.new_zeros((x.num_actors, self.num_classes)).index_copy(0, nodes, logits)
