"""IGMN: identity-aware graph memory network (Ni et al., ACM MM 2021), on cached features.

HGNN (Sec. 3.2), evaluated once per keyframe c that holds query actors. Nodes are the actors of
the keyframes of c's video within +-L clips (L = 30, one clip per `clip_seconds` = 1 s, AVA's
keyframe rate); node features are the pooled actor features reduced to `hidden_dim`. Each of the
`num_layers` = 3 layers (best in the paper's Table 1a) runs three message passings:
  1. intra-actor, the ordered temporal aggregator: along each track (x.actor_track), nodes in
     time order; a node receives W_prev h_prev + W_next h_next from its previous and next node of
     the same track (two FC layers, one per direction), h <- h + ReLU(...). Unknown tracks (-1)
     have no intra-actor edges.
  2. inter-actor intra-clip: self-attention among the nodes of each clip (LFB non-local block).
  3. inter-actor inter-clip: only the actor nodes of c are updated, attending to the memory nodes
     (other clips). Memory nodes of the actor's own track are left out: identity is handled by 1.
  Graph down-sampling between layers: layer l keeps the nodes whose clip offset from c is a
  multiple of 2^l. Along a track, this is the paper's rule (keep nodes at even distance from the
  actor node, link two kept nodes that shared a removed neighbour, drop the rest): consecutive kept
  nodes of a track become neighbours. The paper measures distance in hops along the tracklet; we
  measure it in clips, which also defines it for tracks that never reach c.
  f_mem: the actor's outputs averaged over the layers.
DAM (Sec. 3.3, `dam=True`, needs x.actor_roi (A, C_r, k, k)): on the actor's RoI map, the input
is [RoI feature; geometry embedding; tiled 1x1-reduced f_mem]; semantic and identity weight maps
w_sem = sigmoid(FFN_sem), w_idt = w_sem * sigmoid(FFN_idt) (the paper's improved IA), each FFN two
1x1 convs; f_sem, f_idt are the weighted spatial means. Geometry embedding (Eq. 1): for each RoI
cell, the interference actors j != i of the keyframe whose box contains the cell, and the polar
angle alpha of the cell around each such box's centre; we embed the mean of (sin alpha, cos alpha)
over them (averaging raw angles would wrap around) and the interference indicator p (3 channels).
Fusion (Sec. 3.4): f_fuse = f_mem + W f_idt (W matches the widths), then two layers (Linear, ReLU,
dropout, Linear) give the logits.

Auxiliary losses (Eq. 4-8), weighted by `lambda_aux` (0.5), are returned with the logits by
`forward_with_aux(x, labels)` (the `heads.protocol` capability) for the training loop to add (0
without DAM); plain `forward` does not compute them. They use query actors only:
  relaxed BCE on f_sem's logits, E(y_ic) = max_j IoU(b_i, b_j) y_jc over the keyframe's actors;
  BCE on f_idt's logits; both need `labels` (A, num_classes) multi-hot (all actors of the
  keyframe; zeros where unknown) and are skipped when it is None; the optional `class_mask`
  (num_classes,) bool selects the classes they use (the paper drops the pose classes);
  spatial priors: L_idt = mean_xy (1 - p)(w_IA - 1)^2 on the identity map before its product with
  w_sem, and the ranking loss L_sem = max(0, gamma - mean_xy(p w_sem - (1 - p) w_sem)), gamma 0.1
  (the margin given in Sec. 3.3; Sec. 4.1 says 1).

Deviations (frozen backbone, cached features): features are cached pooled/RoI features, no
end-to-end memory update; the paper's N_max padding of memory clips is unnecessary (masks);
only keyframes holding query actors get the HGNN/DAM output — rows of other actors are the
classifier applied to their own reduced features (placeholders; the loss and predictions use
query rows only), because running the graph around every context keyframe would multiply the cost
by the window size; RoI enlargement (1.25x) is the extractor's business.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stagecache.core.boxes import box_iou_torch
from stagecache.core.timekeys import TIME_EPS

from .batch import HeadInput, box_centres
from .common import NonLocalBlock, keyframes_with
from .protocol import HeadBase


def ordered_neighbours(track: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
    """Previous / next node of the same track in time order; -1 where none (or track < 0).

    track (N,) long, order (N,) float (time offsets) -> prev (N,), next (N,) node indices.
    """
    n = track.shape[0]
    prev = torch.full((n,), -1, dtype=torch.long, device=track.device)
    nxt = prev.clone()
    if n < 2:
        return prev, nxt
    idx = torch.argsort(order, stable=True)
    idx = idx[torch.argsort(track[idx], stable=True)]  # by track, then time
    t = track[idx]
    link = (t[1:] == t[:-1]) & (t[1:] >= 0)
    prev[idx[1:][link]] = idx[:-1][link]
    nxt[idx[:-1][link]] = idx[1:][link]
    return prev, nxt


class OrderedTemporalAggregator(nn.Module):
    """Intra-actor message passing: h_i + ReLU(W_prev h_prev(i) + W_next h_next(i))."""

    def __init__(self, dim: int):
        super().__init__()
        self.w_prev = nn.Linear(dim, dim)
        self.w_next = nn.Linear(dim, dim)

    def forward(self, h: Tensor, prev: Tensor, nxt: Tensor) -> Tensor:
        zero = h.new_zeros(1, h.shape[1])
        hp = torch.cat((h, zero))[prev]  # index -1 -> the zero row
        hn = torch.cat((h, zero))[nxt]
        msg = self.w_prev(hp) * (prev >= 0)[:, None] + self.w_next(hn) * (nxt >= 0)[:, None]
        has = ((prev >= 0) | (nxt >= 0))[:, None]
        return h + F.relu(msg) * has


def relaxed_targets(iou: Tensor, labels: Tensor) -> Tensor:
    """Eq. 4's relaxation E(y_ic) = max_j IoU(b_i, b_j) y_jc.

    iou (N, M) between the N actors and their M candidate co-actors (0 for actors of other
    keyframes; the actor itself, IoU 1, is among them), labels (M, C) -> (N, C).
    """
    return (iou[:, :, None] * labels[None, :, :]).amax(dim=1)


def relaxed_bce(logits: Tensor, labels: Tensor, relaxed: Tensor) -> Tensor:
    """Eq. 4: -(1/N) sum_i sum_c [y_ic log p_ic + (1 - E(y_ic)) log(1 - p_ic)], p = sigmoid(logits)."""
    return -(labels * F.logsigmoid(logits) + (1 - relaxed) * F.logsigmoid(-logits)).sum(dim=1).mean()


def interference_geometry(box: Tensor, kf: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Geometry of the other actors over each actor's k x k RoI grid.

    box (N, 4), kf (N,) keyframe ids -> geo (N, 3, k, k) = [mean sin, mean cos of the cell's polar
    angle around each interfering box's centre, interference indicator p], and p (N, k, k).
    """
    dt, dev = box.dtype, box.device
    frac = (torch.arange(k, device=dev, dtype=dt) + 0.5) / k
    cx = box[:, 0:1] + frac[None] * (box[:, 2:3] - box[:, 0:1])  # (N, k) cell centres
    cy = box[:, 1:2] + frac[None] * (box[:, 3:4] - box[:, 1:2])
    px = cx[:, None, None, :].expand(-1, 1, k, k)  # (N, 1, k, k), column x
    py = cy[:, None, :, None].expand(-1, 1, k, k)
    bj = box[None, :, :, None, None]  # (1, M, 4, 1, 1)
    inside = (px >= bj[:, :, 0]) & (px <= bj[:, :, 2]) & (py >= bj[:, :, 1]) & (py <= bj[:, :, 3])
    other = (kf[:, None] == kf[None, :]) & ~torch.eye(box.shape[0], dtype=torch.bool, device=dev)
    inside = inside & other[:, :, None, None]  # (N, M, k, k): p^j at i's cells
    w = inside.to(dt)
    c = box_centres(box)
    ang = torch.atan2(py - c[None, :, 1, None, None], px - c[None, :, 0, None, None])  # (N, M, k, k)
    cnt = w.sum(dim=1)
    eps = 1e-6
    sin = (w * torch.sin(ang)).sum(1) / (cnt + eps)
    cos = (w * torch.cos(ang)).sum(1) / (cnt + eps)
    p = (cnt > 0).to(dt)
    return torch.stack((sin, cos, p), dim=1), p


class DualAttention(nn.Module):
    """DAM: semantic and identity attention maps over the RoI map (Eq. 2-3)."""

    def __init__(self, roi_dim: int, mem_dim: int, num_classes: int):
        super().__init__()
        in_dim = roi_dim + 3 + mem_dim
        self.in_dim = in_dim

        def ffn() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_dim, in_dim // 2, 1), nn.ReLU(inplace=True), nn.Conv2d(in_dim // 2, 1, 1))

        self.ffn_sem, self.ffn_idt = ffn(), ffn()
        self.cls_sem = nn.Linear(in_dim, num_classes)
        self.cls_idt = nn.Linear(in_dim, num_classes)

    def forward(self, roi: Tensor, geo: Tensor, mem: Tensor):
        """roi (N, C_r, k, k), geo (N, 3, k, k), mem (N, C_m) -> f_sem, f_idt (N, D), w_sem, w_ia (N, k, k)."""
        k = roi.shape[-1]
        f = torch.cat((roi, geo.to(roi.dtype), mem[:, :, None, None].expand(-1, -1, k, k)), dim=1)
        w_sem = torch.sigmoid(self.ffn_sem(f))  # (N, 1, k, k)
        w_ia = torch.sigmoid(self.ffn_idt(f))
        w_idt = w_sem * w_ia  # the paper's improved identity map
        f_sem = (f * w_sem).mean(dim=(2, 3))
        f_idt = (f * w_idt).mean(dim=(2, 3))
        return f_sem, f_idt, w_sem[:, 0], w_ia[:, 0]


class IGMNHead(HeadBase):
    has_aux_loss = True

    def __init__(self, actor_dim: int, object_dim: int, num_classes: int, *, hidden_dim: int = 512,
                 num_layers: int = 3, memory_clips: int = 30, clip_seconds: float = 1.0,
                 dam: bool = False, roi_dim: int | None = None, mem_reduce_dim: int = 128,
                 lambda_aux: float = 0.5, gamma: float = 0.1, nl_dropout: float = 0.2,
                 dropout: float = 0.5):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"igmn: num_layers must be >= 1, got {num_layers}")
        if memory_clips < 0 or clip_seconds <= 0:
            raise ValueError(f"igmn: need memory_clips >= 0 and clip_seconds > 0, got "
                             f"{memory_clips}, {clip_seconds}")
        self.num_layers = num_layers
        self.memory_clips = int(memory_clips)
        self.clip_seconds = float(clip_seconds)
        self.temporal_radius = self.memory_clips * self.clip_seconds
        self.dam_on = bool(dam)
        self.requires = frozenset({"tracks", "roi"} if dam else {"tracks"})
        self.lambda_aux = float(lambda_aux)
        self.gamma = float(gamma)
        self.node = nn.Sequential(nn.Linear(actor_dim, hidden_dim), nn.ReLU(inplace=True))
        self.intra_actor = nn.ModuleList(OrderedTemporalAggregator(hidden_dim) for _ in range(num_layers))
        self.intra_clip = nn.ModuleList(NonLocalBlock(hidden_dim, dropout=nl_dropout) for _ in range(num_layers))
        self.inter_clip = nn.ModuleList(NonLocalBlock(hidden_dim, dropout=nl_dropout) for _ in range(num_layers))
        if dam:
            self.roi_dim = actor_dim if roi_dim is None else roi_dim
            self.mem_reduce = nn.Linear(hidden_dim, mem_reduce_dim)
            self.dam = DualAttention(self.roi_dim, mem_reduce_dim, num_classes)
            self.idt_proj = nn.Linear(self.dam.in_dim, hidden_dim)
        self.classifier = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes))

    def hgnn(self, x: HeadInput, h0: Tensor, center: int) -> tuple[Tensor, Tensor]:
        """Run the HGNN around keyframe `center`. Returns (actor rows, f_mem (n, hidden))."""
        kv, kt = x.kf_video, x.kf_time.double()
        akf = x.actor_kf
        dt = kt[akf] - kt[center]  # (A,)
        near = (kv[akf] == kv[center]) & (dt.abs() <= self.temporal_radius + TIME_EPS)
        nodes = near.nonzero(as_tuple=True)[0]
        off = torch.round(dt[nodes] / self.clip_seconds).long()  # clip offset from the centre
        track = x.actor_track[nodes] if x.actor_track is not None else torch.full_like(off, -1)
        nkf = akf[nodes]
        h = h0[nodes]
        outs = []
        for layer in range(self.num_layers):
            active = (off % (2 ** layer) == 0).nonzero(as_tuple=True)[0]  # graph down-sampling
            ha, oa, ta, ka = h[active], off[active], track[active], nkf[active]
            prev, nxt = ordered_neighbours(ta, oa.to(h.dtype))
            ha = self.intra_actor[layer](ha, prev, nxt)
            ha = self.intra_clip[layer](ha, ha, ka[:, None] == ka[None, :])
            is_actor = oa == 0
            mem_mask = ~is_actor[None, :] & ~((ta[:, None] == ta[None, :]) & (ta[:, None] >= 0))
            upd = self.inter_clip[layer](ha[is_actor], ha, mem_mask[is_actor])
            ha = ha.clone()
            ha[is_actor] = upd
            h = h.clone()
            h[active] = ha
            outs.append(ha[is_actor])
        rows = nodes[off == 0]  # offset 0 are the centre's actors (same order: off==0 among active)
        return rows, torch.stack(outs).mean(dim=0)

    def forward(self, x: HeadInput) -> Tensor:
        return self._forward(x, None, None, aux=False)[0]

    def forward_with_aux(self, x: HeadInput, labels: Tensor | None, *,
                         class_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(logits, lambda_aux * DAM auxiliary losses) of one forward; the loss is 0 without DAM.
        labels (A, num_classes) multi-hot or None; class_mask (num_classes,) bool or None."""
        return self._forward(x, labels, class_mask, aux=True)

    def _forward(self, x: HeadInput, labels: Tensor | None, class_mask: Tensor | None, *,
                 aux: bool) -> tuple[Tensor, Tensor | None]:
        if x.actor_track is None:
            raise ValueError("igmn needs x.actor_track (A,): run the tracker (store group 'tracks')")
        h0 = self.node(x.actor_feat)  # (A, d)
        f_mem = h0.clone()  # placeholder rows for actors of keyframes without queries
        for c in keyframes_with(x.actor_kf, x.is_query).tolist():
            rows, fm = self.hgnn(x, h0, c)
            f_mem[rows] = fm
        if not self.dam_on:
            return self.classifier(f_mem), (torch.zeros((), device=f_mem.device) if aux else None)
        if x.actor_roi is None:
            raise ValueError("igmn with dam=True needs x.actor_roi (A, C, k, k): the store's actor_roi level")
        if x.actor_roi.shape[1] != self.roi_dim:
            raise ValueError(f"igmn: actor_roi has {x.actor_roi.shape[1]} channels, head built with "
                             f"roi_dim={self.roi_dim}")
        q = torch.isin(x.actor_kf, keyframes_with(x.actor_kf, x.is_query)).nonzero(as_tuple=True)[0]
        k = x.actor_roi.shape[-1]
        geo, p = interference_geometry(x.actor_box, x.actor_kf, k)
        f_sem, f_idt, w_sem, w_ia = self.dam(x.actor_roi[q], geo[q], self.mem_reduce(f_mem[q]))
        fused = f_mem.clone()
        fused[q] = f_mem[q] + self.idt_proj(f_idt)
        aux_loss = (self.lambda_aux * self._aux_terms(x, q, f_sem, f_idt, w_sem, w_ia, p[q], labels, class_mask)
                    if aux else None)
        return self.classifier(fused), aux_loss

    def _aux_terms(self, x: HeadInput, q: Tensor, f_sem, f_idt, w_sem, w_ia, p, labels: Tensor | None,
                   cmask: Tensor | None) -> Tensor:
        sel = x.is_query[q]
        if not bool(sel.any()):
            return f_sem.sum() * 0
        p = p[sel].to(w_sem.dtype)
        w_sem, w_ia = w_sem[sel], w_ia[sel]
        loss = ((1 - p) * (w_ia - 1) ** 2).mean(dim=(1, 2)).mean()  # Eq. 6
        gap = (p * w_sem - (1 - p) * w_sem).mean(dim=(1, 2))
        loss = loss + F.relu(self.gamma - gap).mean()  # Eq. 8
        if labels is not None:
            rows = q[sel]
            lab = labels.to(f_sem.dtype)
            cols = slice(None) if cmask is None else cmask.bool()
            same = x.actor_kf[rows][:, None] == x.actor_kf[None, :]
            iou = box_iou_torch(x.actor_box[rows], x.actor_box) * same  # co-actors only
            logit_sem = self.dam.cls_sem(f_sem[sel])[:, cols]
            logit_idt = self.dam.cls_idt(f_idt[sel])[:, cols]
            y = lab[rows][:, cols]
            l_sem = relaxed_bce(logit_sem, y, relaxed_targets(iou, lab[:, cols]))
            l_idt = F.binary_cross_entropy_with_logits(logit_idt, y, reduction="none").sum(1).mean()
            loss = loss + l_sem + l_idt
        return loss
