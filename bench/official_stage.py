"""The official STAGE code's training structure (aimagelab/STAGE_action_detection: models/model.py,
models/gat.py, models/attention_layer.py, data/collate_batch.py), written for bench/bench_train.py
as the baseline: what its code does per step, not its code.

- Collation per step: the batch's per-keyframe tensors are concatenated into one node list
  (actors first, then objects) and a dense N x N adjacency is filled keyframe by keyframe by
  position in the batch: keyframe i is linked to i-1, i and i+1 of the batch (whatever their video
  or time), weight exp(-distance of box centres); object-actor entries are the transpose.
- Model: objects reduced to the actor width by a linear layer + ReLU; [h, w, xc, yc] appended;
  two GAT blocks, each: dropout 0.5 on the input, per head h = x W, the dense N x N x 2F tensor of
  concatenations h_i || h_j times a, LeakyReLU 0.2, `where(adj > 0, e * adj, -9e15)`, softmax over
  the whole row, h' = softmax @ h, dropout, ELU; heads concatenated; x + FC(heads), LayerNorm.
  Logits of every actor of the batch; BCE; torch's default Adam.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stagecache.heads.batch import box_geometry
from stagecache.pipelines.training.split_batches import GraphData


class OfficialLayer(nn.Module):
    """One GAT block of the official model: per head W, a; dense pair tensor; residual FC + LN."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.5, slope: float = 0.2):
        super().__init__()
        self.dh = dim // heads  # the official (actor_dim / heads) + (4 / heads) equals this for 1028 / 4
        self.w = nn.ParameterList(nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, self.dh), 1.414))
                                  for _ in range(heads))
        self.a = nn.ParameterList(nn.Parameter(nn.init.xavier_uniform_(torch.empty(2 * self.dh, 1), 1.414))
                                  for _ in range(heads))
        self.fc, self.norm = nn.Linear(heads * self.dh, dim), nn.LayerNorm(dim)
        self.dropout, self.slope = dropout, slope

    def forward(self, x, adj):
        n = x.shape[0]
        xin = F.dropout(x, self.dropout, self.training)
        outs = []
        for w, a in zip(self.w, self.a):
            h = xin @ w  # (N, dh)
            pair = torch.cat((h[:, None].expand(n, n, self.dh), h[None].expand(n, n, self.dh)), 2)  # (N, N, 2 dh)
            e = F.leaky_relu((pair @ a).squeeze(2), self.slope)  # (N, N)
            att = torch.softmax(torch.where(adj > 0, e * adj, torch.full_like(e, -9e15)), 1)
            outs.append(F.elu(F.dropout(att @ h, self.dropout, self.training)))
        return self.norm(x + self.fc(torch.cat(outs, 1)))


class OfficialStage(nn.Module):
    def __init__(self, actor_dim, object_dim, num_classes, heads, layers=2):
        super().__init__()
        self.reducer = nn.Linear(object_dim, actor_dim)
        self.layers = nn.ModuleList(OfficialLayer(actor_dim + 4, heads) for _ in range(layers))
        self.logits = nn.Linear(actor_dim + 4, num_classes)

    def forward(self, af, ab, of, ob, adj):
        fa = torch.cat((af, box_geometry(ab)), 1)
        fo = torch.cat((F.relu(self.reducer(of)), box_geometry(ob)), 1)
        x = torch.cat((fa, fo), 0)
        for layer in self.layers:
            x = layer(x, adj)
        return self.logits(x[: af.shape[0]])


def centre_affinity(b1, b2):
    c1, c2 = (b1[:, :2] + b1[:, 2:]) / 2, (b2[:, :2] + b2[:, 2:]) / 2
    return torch.exp(-torch.cdist(c1, c2))


def official_collate(items: list[dict], device):
    """Concatenate per-keyframe tensors; dense adjacency by batch position (i linked to i +- 1)."""
    na = [it["ab"].shape[0] for it in items]
    no = [it["ob"].shape[0] for it in items]
    a0 = [sum(na[:i]) for i in range(len(items))]
    o0 = [sum(no[:i]) for i in range(len(items))]
    A, O = sum(na), sum(no)
    adj = torch.zeros(A + O, A + O)
    for i, it in enumerate(items):
        for j in (i - 1, i, i + 1):
            if 0 <= j < len(items):
                jt = items[j]
                adj[a0[i]:a0[i] + na[i], a0[j]:a0[j] + na[j]] = centre_affinity(it["ab"], jt["ab"])
                adj[a0[i]:a0[i] + na[i], A + o0[j]:A + o0[j] + no[j]] = centre_affinity(it["ab"], jt["ob"])
                adj[A + o0[i]:A + o0[i] + no[i], A + o0[j]:A + o0[j] + no[j]] = centre_affinity(it["ob"], jt["ob"])
    adj[A:, :A] = adj[:A, A:].t()
    cat = {k: torch.cat([it[k] for it in items]).to(device) for k in ("af", "ab", "al", "of", "ob")}
    return cat, adj.to(device)


def official_items(g: GraphData) -> list[dict]:
    """What the official dataset returns per keyframe (here from memory, no file reads)."""
    out = []
    ao, oo = g.actor_offset.cpu(), g.object_offset.cpu()
    for k in range(g.num_keyframes):
        a, b, c, d = int(ao[k]), int(ao[k + 1]), int(oo[k]), int(oo[k + 1])
        out.append({"af": g.actor_feat[a:b].float().cpu(), "ab": g.actor_box[a:b].cpu(),
                    "al": g.actor_labels[a:b].float().cpu(), "of": g.object_feat[c:d].float().cpu(),
                    "ob": g.object_box[c:d].cpu()})
    return out
