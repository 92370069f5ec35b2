"""STAGE head: equality with a loop-based transcription of the paper's equations, locality in
(video, time), permutation equivariance, and the ablation flags."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from stagecache.heads import build_head
from stagecache.heads.batch import HeadInput
from stagecache.heads.stage import FEATURE_EPS, STAGEHead
from tests.comparisons import assert_informative

CA, CO, NC = 7, 5, 3  # actor dim, object dim, classes


def make_input(kfs, *, seed=0, dtype=torch.float64, actor_dim=CA, object_dim=CO) -> HeadInput:
    """kfs: list of (video, time, n_actors, n_objects)."""
    g = torch.Generator().manual_seed(seed)
    kf_video = torch.tensor([k[0] for k in kfs])
    kf_time = torch.tensor([float(k[1]) for k in kfs], dtype=torch.float64)
    actor_kf = torch.cat([torch.full((k[2],), i) for i, k in enumerate(kfs)]).long()
    object_kf = torch.cat([torch.full((k[3],), i) for i, k in enumerate(kfs)]).long()

    def boxes(n):
        xy = torch.rand(n, 2, generator=g, dtype=dtype) * 0.6
        wh = torch.rand(n, 2, generator=g, dtype=dtype) * 0.3 + 0.05
        return torch.cat((xy, xy + wh), 1)

    a, o = actor_kf.numel(), object_kf.numel()
    return HeadInput(
        kf_video=kf_video, kf_time=kf_time,
        actor_feat=torch.randn(a, actor_dim, generator=g, dtype=dtype), actor_box=boxes(a), actor_kf=actor_kf,
        is_query=torch.ones(a, dtype=torch.bool),
        object_feat=torch.randn(o, object_dim, generator=g, dtype=dtype), object_box=boxes(o), object_kf=object_kf,
        object_class=torch.zeros(o, dtype=torch.long),
    )


# video 0 at t = 0..3 plus t = 10, video 1 at t = 1; mixed counts, one single-actor keyframe.
KFS = [(0, 0, 2, 2), (0, 1, 1, 3), (1, 1, 2, 1), (0, 2, 2, 0), (0, 3, 1, 2), (0, 10, 2, 2)]


def build(*, actor_dim=CA, object_dim=CO, **kw) -> STAGEHead:
    torch.manual_seed(0)
    return STAGEHead(actor_dim, object_dim, NC, **kw).double().eval()


# Wide enough for the computation's zero padding (heads/stage_layer.py, ALIGN): d_f = 501 + 4 = 505,
# computed 512 wide; the object projection's outputs likewise.
WIDE = {"actor_dim": 501, "object_dim": 700}


# ---------------------------------------------------------------- loop reference (paper equations)
def reference(head: STAGEHead, x: HeadInput, *, attention="gat", adjacency="box", proximity=True,
              temporal=True, actor_actor=True, object_object=True, use_objects=True, box_features=True,
              window=3, time_step=1.0) -> torch.Tensor:
    # Node features: feature || [h, w, xc, yc], larger dimension projected to the smaller.
    def geom(b):
        return torch.stack((b[3] - b[1], b[2] - b[0], (b[0] + b[2]) / 2, (b[1] + b[3]) / 2))

    feats, cents, kf, actor = [], [], [], []
    items = [(x.actor_feat, x.actor_box, x.actor_kf, True, head.actor_proj)]
    if use_objects:
        items.append((x.object_feat, x.object_box, x.object_kf, False, head.object_proj))
    for fs, bs, ks, is_a, proj in items:
        for i in range(fs.shape[0]):
            v = torch.cat((fs[i], geom(bs[i]))) if box_features else fs[i]
            if proj is not None:
                v = proj.weight @ v + proj.bias
            feats.append(v)
            cents.append(geom(bs[i])[2:])
            kf.append(int(ks[i]))
            actor.append(is_a)
    n = len(feats)
    f = torch.stack(feats)
    radius = (window // 2) * time_step

    def connected(i, j):
        ki, kj = kf[i], kf[j]
        if i == j:
            return True
        if temporal:
            if x.kf_video[ki] != x.kf_video[kj] or abs(float(x.kf_time[ki] - x.kf_time[kj])) > radius + 1e-3:
                return False
        elif ki != kj:
            return False
        if not actor_actor and actor[i] and actor[j]:
            return False
        if not object_object and not actor[i] and not actor[j]:
            return False
        return True

    for layer in head.layers:
        dh = layer.head_dim
        head_outs = []
        for k in range(layer.num_heads):
            rows = slice(k * dh, (k + 1) * dh)
            if attention == "gat":
                h = f @ layer.fc_h.weight[rows].T + layer.fc_h.bias[rows]
                vals = h
            else:
                q = f @ layer.fc_q.weight[rows].T + layer.fc_q.bias[rows]
                kk = f @ layer.fc_k.weight[rows].T + layer.fc_k.bias[rows]
                vals = f @ layer.fc_v.weight[rows].T + layer.fc_v.bias[rows]
            new = []
            for i in range(n):
                d_row, nbrs = [], []
                for j in range(n):
                    if not connected(i, j):
                        continue
                    if attention == "gat":
                        e = F.leaky_relu(layer.attn_w[k] @ torch.cat((h[i], h[j])) + layer.attn_b[k], 0.2)
                    else:
                        e = q[i] @ kk[j] / math.sqrt(dh)
                    if adjacency == "feature":
                        a = 1.0 if i == j else 1.0 / torch.linalg.norm(vals[i] - vals[j]).clamp_min(FEATURE_EPS)
                    elif proximity:
                        a = torch.exp(-torch.linalg.norm(cents[i] - cents[j]))
                    else:
                        a = 1.0
                    d_row.append(a * e)
                    nbrs.append(j)
                w = torch.softmax(torch.stack(d_row), 0)
                new.append(F.elu(sum(w[m] * vals[j] for m, j in enumerate(nbrs))))
            head_outs.append(torch.stack(new))
        cat = torch.cat(head_outs, 1)
        f = F.layer_norm(f + cat @ layer.fc_out.weight.T + layer.fc_out.bias, (f.shape[1],),
                         layer.norm.weight, layer.norm.bias, layer.norm.eps)
    return f[: x.num_actors] @ head.classifier.weight.T + head.classifier.bias


VARIANTS = [
    {},
    {"attention": "dot"},
    {"adjacency": "feature"},
    {"attention": "dot", "adjacency": "feature"},
    {"proximity": False},
    {"temporal": False},
    {"actor_actor": False},
    {"object_object": False},
    {"use_objects": False},
    {"box_features": False},
    {"window": 5, "num_heads": 3, "num_layers": 1},
]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_matches_loop_reference(kw):
    x = make_input(KFS)
    head = build(**kw)
    ref_kw = {k: v for k, v in kw.items() if k not in ("num_heads", "num_layers")}
    want = reference(head, x, **ref_kw)
    assert_informative(want, "loop-reference logits", min_len=2)
    assert_close(head(x), want)


@pytest.mark.parametrize("kw, head_width", [({}, 256), ({"num_heads": 4}, 128), ({"num_heads": 3}, 168),
                                            ({"adjacency": "feature"}, 256), ({"attention": "dot"}, 252)],
                         ids=["default", "num_heads=4", "num_heads=3", "adjacency=feature", "attention=dot"])
def test_padded_widths_match_loop_reference(kw, head_width):
    """Computed on zero-padded widths (GAT only; 3 heads of 168 would need 176 each, over the
    padding's bound): the paper's values and the parameters' gradients, the parameters unpadded."""
    head = build(**WIDE, **kw)
    assert head.dim == 505 and head.padded_dim == (505 if kw.get("attention") == "dot" else 512)
    assert head.layers[0].padded_head_dim == head_width
    assert head.object_proj.weight.shape == (505, 704) and head.layers[0].fc_out.weight.shape[0] == 505
    x = make_input(KFS, **WIDE)
    ref_kw = {k: v for k, v in kw.items() if k != "num_heads"}
    out, want = head(x), reference(head, x, **ref_kw)
    assert_informative(want, "loop-reference logits", min_len=2)
    assert_close(out, want)
    grads = torch.autograd.grad(out.square().sum(), list(head.parameters()))
    for p, g, w in zip(head.parameters(), grads, torch.autograd.grad(want.square().sum(), list(head.parameters()))):
        assert g.shape == p.shape
        assert_close(g, w)


def test_padded_widths_train_like_the_model_widths():
    """In training, the padded computation draws the same dropout masks as the unpadded one
    (`align_widths=False`): the same outputs and gradients under one seed."""
    x = make_input(KFS, **WIDE)
    outs = []
    for align in (True, False):
        head = build(**WIDE, align_widths=align).train()
        assert head.padded_dim == (512 if align else 505)
        torch.manual_seed(3)
        out = head(x)
        outs.append((out, torch.autograd.grad(out.square().sum(), list(head.parameters()))))
    (a, ga), (b, gb) = outs
    assert_close(a, b)
    for u, v in zip(ga, gb):
        assert_close(u, v)


def test_projection_side_and_dims():
    # The larger of (actor_dim + 4, object_dim + 4) is projected to the smaller.
    h = STAGEHead(10, 6, 2)
    assert h.actor_proj is not None and h.object_proj is None and h.dim == 10
    h = STAGEHead(6, 10, 2)
    assert h.object_proj is not None and h.actor_proj is None and h.dim == 10
    h = STAGEHead(6, 6, 2, box_features=False)
    assert h.actor_proj is None and h.object_proj is None and h.dim == 6
    assert STAGEHead(6, 100, 2, use_objects=False).dim == 10


# ---------------------------------------------------------------- locality and equivariance
def perturbed(x: HeadInput, kf_ids, *, seed=1) -> HeadInput:
    """Copy of x with new features and boxes for the actors/objects of keyframes kf_ids."""
    g = torch.Generator().manual_seed(seed)
    y = HeadInput(**{k: (v.clone() if torch.is_tensor(v) else v) for k, v in x.__dict__.items()})
    for feat, box, kf in ((y.actor_feat, y.actor_box, y.actor_kf), (y.object_feat, y.object_box, y.object_kf)):
        sel = torch.isin(kf, torch.tensor(kf_ids))
        feat[sel] = torch.randn(int(sel.sum()), feat.shape[1], generator=g, dtype=feat.dtype) * 3
        box[sel] = (box[sel] * 0.5 + 0.4).clamp(0, 1)
    return y


def test_other_video_and_outside_window_do_not_matter():
    x = make_input(KFS)
    head = build()  # 2 layers, window 3: radius 2 s
    assert head.temporal_radius == 2.0
    base = head(x)
    q0 = x.actor_kf == 0  # query keyframe: video 0, t = 0
    # video 1 (kf 2), t = 3 (kf 4) and t = 10 (kf 5) are outside video 0 / t <= 2.
    assert_close(head(perturbed(x, [2, 4, 5]))[q0], base[q0])
    # t = 2 is two links away: inside the 2-layer receptive field.
    assert not torch.allclose(head(perturbed(x, [3]))[q0], base[q0])
    # with one layer the receptive field is 1 s: t = 2 no longer matters, t = 1 does.
    one = build(num_layers=1)
    assert one.temporal_radius == 1.0
    assert_close(one(perturbed(x, [3]))[q0], one(x)[q0])
    assert not torch.allclose(one(perturbed(x, [1]))[q0], one(x)[q0])


def test_permutation_equivariance():
    x = make_input(KFS)
    head = build()
    base = head(x)
    g = torch.Generator().manual_seed(3)
    kp = torch.randperm(x.num_keyframes, generator=g)  # new kf i = old kf kp[i]
    inv = torch.argsort(kp)
    ap = torch.randperm(x.num_actors, generator=g)
    op = torch.randperm(x.num_objects, generator=g)
    y = HeadInput(
        kf_video=x.kf_video[kp], kf_time=x.kf_time[kp],
        actor_feat=x.actor_feat[ap], actor_box=x.actor_box[ap], actor_kf=inv[x.actor_kf[ap]],
        is_query=x.is_query[ap],
        object_feat=x.object_feat[op], object_box=x.object_box[op], object_kf=inv[x.object_kf[op]],
        object_class=x.object_class[op],
    )
    assert_close(head(y), base[ap])


# ---------------------------------------------------------------- ablation flags
def test_temporal_false_is_per_keyframe():
    x = make_input(KFS)
    head = build(temporal=False)
    assert head.temporal_radius == 0.0
    base = head(x)
    sel = x.actor_kf == 1
    assert_close(head(perturbed(x, [0, 2, 3, 4, 5]))[sel], base[sel])
    assert not torch.allclose(build()(perturbed(x, [0]))[sel], build()(x)[sel])


def _first_layer_nodes(head: STAGEHead, x: HeadInput) -> torch.Tensor:
    f, centres, node_kf, is_actor = head.node_features(x)
    return head.layers[0](f, centres, head.build_graph(x, node_kf, is_actor))


def test_actor_actor_false_ignores_other_actors():
    x = make_input(KFS)
    y = make_input(KFS, seed=5)
    y.object_feat, y.object_box = x.object_feat, x.object_box  # same objects, other actors
    a0 = 0  # first actor (kf 0); give it identical input in x and y
    y.actor_feat[a0], y.actor_box[a0] = x.actor_feat[a0], x.actor_box[a0]
    head = build(actor_actor=False, num_layers=1)
    assert_close(_first_layer_nodes(head, y)[a0], _first_layer_nodes(head, x)[a0])
    full = build(num_layers=1)
    assert not torch.allclose(_first_layer_nodes(full, y)[a0], _first_layer_nodes(full, x)[a0])


def test_object_object_false_ignores_other_objects():
    x = make_input(KFS)
    y = make_input(KFS, seed=5)
    y.actor_feat, y.actor_box = x.actor_feat, x.actor_box  # same actors, other objects
    o0 = 0  # first object (kf 0), identical in x and y
    y.object_feat[o0], y.object_box[o0] = x.object_feat[o0], x.object_box[o0]
    node = x.num_actors + o0
    head = build(object_object=False)
    assert_close(_first_layer_nodes(head, y)[node], _first_layer_nodes(head, x)[node])
    full = build()
    assert not torch.allclose(_first_layer_nodes(full, y)[node], _first_layer_nodes(full, x)[node])


def test_use_objects_false_ignores_objects():
    x = make_input(KFS)
    head = build(use_objects=False)
    assert head.requires == frozenset() and build().requires == frozenset({"objects"})
    y = make_input(KFS, seed=9)
    y.actor_feat, y.actor_box = x.actor_feat, x.actor_box
    assert_close(head(y), head(x))
    z = make_input([(k[0], k[1], k[2], 0) for k in KFS])
    z.actor_feat, z.actor_box = x.actor_feat, x.actor_box
    assert_close(head(z), head(x))


def test_proximity_flag_changes_only_box_prior():
    # proximity=False: moving far-apart boxes (same geometry features) changes nothing.
    x = make_input(KFS)
    head_np, head_p = build(proximity=False, box_features=False), build(box_features=False)
    y = perturbed(x, [])
    y.object_box = (x.object_box + torch.tensor([0.3, 0.0, 0.3, 0.0], dtype=x.object_box.dtype))
    assert_close(head_np(y), head_np(x))
    assert not torch.allclose(head_p(y), head_p(x))


# ---------------------------------------------------------------- edge cases, registry, dtypes
def test_no_objects_and_single_actor_keyframes():
    x = make_input([(0, 0, 1, 0), (0, 1, 1, 0), (3, 5, 1, 0)])
    head = build()
    out = head(x)
    assert out.shape == (3, NC) and torch.isfinite(out).all()
    assert_close(out, reference(head, x))
    empty = make_input([(0, 0, 0, 2)])
    assert head(empty).shape == (0, NC)


def test_bad_shapes_and_args():
    x = make_input(KFS)
    with pytest.raises(ValueError, match="actor_feat"):
        STAGEHead(CA + 1, CO, NC).double()(x)
    with pytest.raises(ValueError, match="window"):
        STAGEHead(CA, CO, NC, window=2)
    with pytest.raises(ValueError, match="attention"):
        STAGEHead(CA, CO, NC, attention="nope")


def test_autocast_bfloat16_cpu():
    x = make_input(KFS, dtype=torch.float32)
    head = STAGEHead(CA, CO, NC)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
