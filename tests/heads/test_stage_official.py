"""`stage --head-arg variant=official` against a direct transcription of the official model
(aimagelab/STAGE_action_detection: models/model.py, models/gat.py, models/attention_layer.py,
data/collate_batch.py) with the same weights, in eval mode and in train mode (dropout, same seed);
and the official parameter names round trip."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from stagecache.heads import build_head
from stagecache.heads.batch import HeadInput
from stagecache.heads.stage import STAGEHead
from stagecache.heads.stage_official import from_official_state_dict, to_official_state_dict
from tests.comparisons import assert_informative

CA, CO, H = 12, 20, 4  # I3D-like: objects wider than actors, 4 heads of 12/4 + 4/4 = 4 channels


def official_state_dict(seed=0, *, ca=CA, co=CO, heads=H, outputs=81) -> dict[str, torch.Tensor]:
    """Random weights under the official model's parameter names and shapes."""
    g = torch.Generator().manual_seed(seed)
    d, dh = ca + 4, ca // heads + 4 // heads

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * 0.3

    sd = {}
    if co > ca:
        sd["obj_reducer.weight"], sd["obj_reducer.bias"] = r(ca, co), r(ca)
    for gat, fc, ln in (("gat1", "gat_fc", "l_norm"), ("gat2", "gat_fc2", "l_norm2")):
        for k in range(heads):
            sd[f"{gat}.attention_{k}.W"], sd[f"{gat}.attention_{k}.a"] = r(d, dh), r(2 * dh, 1)
        sd[f"{fc}.weight"], sd[f"{fc}.bias"] = r(d, d), r(d)
        sd[f"{ln}.weight"], sd[f"{ln}.bias"] = 1 + r(d), r(d)
    sd["logits.weight"], sd["logits.bias"] = r(outputs, d), r(outputs)
    return sd


def batch(items, seed=1, dtype=torch.float64):
    """items: list of (video, time, n_actors, n_objects), in batch order."""
    g = torch.Generator().manual_seed(seed)

    def boxes(n):
        xy = torch.rand(n, 2, generator=g, dtype=dtype) * 0.6
        return torch.cat((xy, xy + torch.rand(n, 2, generator=g, dtype=dtype) * 0.3 + 0.05), 1)

    akf = torch.cat([torch.full((it[2],), i) for i, it in enumerate(items)]).long()
    okf = torch.cat([torch.full((it[3],), i) for i, it in enumerate(items)]).long()
    return HeadInput(
        kf_video=torch.tensor([it[0] for it in items]), kf_time=torch.tensor([float(it[1]) for it in items]),
        actor_feat=torch.randn(len(akf), CA, generator=g, dtype=dtype), actor_box=boxes(len(akf)), actor_kf=akf,
        is_query=torch.ones(len(akf), dtype=torch.bool),
        object_feat=torch.randn(len(okf), CO, generator=g, dtype=dtype), object_box=boxes(len(okf)),
        object_kf=okf, object_class=torch.zeros(len(okf), dtype=torch.long))


# ------------------------------------------------------------ direct transcription of the official code
def official_adjacency(x: HeadInput) -> torch.Tensor:
    """collate_batch.py: exp(-centre distance) between the actors/objects of batch item i and of
    items i-1, i, i+1 (by position, whatever the video), zero elsewhere; actors first, then objects."""
    def centres(b):
        return torch.stack((((b[:, 2] - b[:, 0]) / 2) + b[:, 0], ((b[:, 3] - b[:, 1]) / 2) + b[:, 1]), 1)

    boxes = torch.cat((x.actor_box, x.object_box))
    item = torch.cat((x.actor_kf, x.object_kf))
    c = centres(boxes)
    adj = torch.zeros(len(boxes), len(boxes), dtype=boxes.dtype)
    for i in range(len(boxes)):
        for j in range(len(boxes)):
            if abs(int(item[i]) - int(item[j])) <= 1:
                adj[i, j] = torch.exp(-torch.sqrt(((c[i] - c[j]) ** 2).sum()))
    return adj


def official_forward(sd, x: HeadInput, *, heads=H, training=False, p=0.5) -> torch.Tensor:
    """models/model.py Stage.forward up to the logits (before the sigmoid)."""
    def geom(b):
        return torch.stack((b[:, 3] - b[:, 1], b[:, 2] - b[:, 0], ((b[:, 2] - b[:, 0]) / 2) + b[:, 0],
                            ((b[:, 3] - b[:, 1]) / 2) + b[:, 1]), 1)

    fa = torch.cat((x.actor_feat, geom(x.actor_box)), 1)
    fo = x.object_feat
    if "obj_reducer.weight" in sd:
        fo = F.relu(fo @ sd["obj_reducer.weight"].t() + sd["obj_reducer.bias"])
    f = torch.cat((fa, torch.cat((fo, geom(x.object_box)), 1)))
    adj = official_adjacency(x)
    for gat, fc, ln in (("gat1", "gat_fc", "l_norm"), ("gat2", "gat_fc2", "l_norm2")):
        inp = F.dropout(f, p, training=training)  # gat.py
        outs = []
        for k in range(heads):  # attention_layer.py
            W, a = sd[f"{gat}.attention_{k}.W"], sd[f"{gat}.attention_{k}.a"]
            h = inp @ W
            n, dh = h.shape
            pairs = torch.cat((h[:, None].expand(n, n, dh), h[None].expand(n, n, dh)), 2)  # (n, n, 2 dh): [h_i, h_j]
            e = F.leaky_relu((pairs @ a).squeeze(2), 0.2)
            att = torch.where(adj > 0, e * adj, torch.full_like(e, -9e15))
            h_prime = F.softmax(att, dim=1) @ h
            outs.append(F.elu(F.dropout(h_prime, p, training=training)))
        f = f + torch.cat(outs, 1) @ sd[f"{fc}.weight"].t() + sd[f"{fc}.bias"]
        f = F.layer_norm(f, (f.shape[1],), sd[f"{ln}.weight"], sd[f"{ln}.bias"])
    return f[: x.num_actors] @ sd["logits.weight"].t() + sd["logits.bias"]


# Two videos in one batch: the official code links neighbouring items across the video change and
# ignores the time gap (903 -> 950); one item without objects, one without actors.
ITEMS = [(0, 902, 2, 3), (0, 903, 1, 0), (0, 950, 3, 2), (1, 902, 0, 2), (1, 903, 2, 1)]


def test_official_variant_equals_official_code_eval_and_train():
    sd = official_state_dict()
    cols = list(range(81))
    head = from_official_state_dict(sd, class_columns=cols).double()
    x = batch(ITEMS)
    head.eval()
    want = official_forward(sd, x)
    assert_informative(want, "official STAGE logits", min_len=2)
    assert_close(head(x), want)
    head.train()
    torch.manual_seed(5)
    got = head(x)
    torch.manual_seed(5)
    assert_close(got, official_forward(sd, x, training=True))
    # Same weights, other dropout draws: the train-mode check does exercise dropout.
    assert not torch.allclose(got, official_forward(sd, x, training=False))


def test_official_variant_equal_dims_two_heads_and_single_item():
    sd = official_state_dict(2, co=CA, heads=2)  # no obj_reducer when widths are equal
    assert "obj_reducer.weight" not in sd
    head = from_official_state_dict(sd).double().eval()
    assert head.num_classes == 80 and head.layers[0].head_dim == CA // 2 + 2
    x = batch([(0, 902, 2, 2), (0, 903, 2, 2)], seed=3)
    x.object_feat = x.object_feat[:, :CA].contiguous()
    assert_close(head(x), official_forward(sd, x, heads=2)[:, 1:])
    # One item: self links only (the official collate needs >= 2 items); neighbours do not leak in.
    one = batch([(0, 902, 2, 2)], seed=3)
    one.object_feat = one.object_feat[:, :CA].contiguous()
    assert_close(head(one), official_forward(sd, one, heads=2)[:, 1:])


def test_state_dict_round_trip_with_official_names():
    sd = official_state_dict(4)
    head = from_official_state_dict(sd, class_columns=list(range(81)))
    back = to_official_state_dict(head, class_columns=list(range(81)))
    assert sorted(back) == sorted(sd)
    for k in sd:
        assert back[k].shape == sd[k].shape and torch.equal(back[k], sd[k]), k
    # Default columns: the background output is dropped, column c stays id c.
    head80 = from_official_state_dict(sd)
    assert torch.equal(head80.classifier.weight, sd["logits.weight"][1:])
    back80 = to_official_state_dict(head80)
    assert torch.equal(back80["logits.weight"][1:], sd["logits.weight"][1:])
    assert torch.equal(back80["logits.weight"][0], torch.zeros_like(sd["logits.weight"][0]))
    with pytest.raises(KeyError, match="official Stage model"):
        from_official_state_dict({"classifier.weight": torch.zeros(1)})


def test_official_variant_options_and_registry():
    head = build_head("stage", actor_dim=CA, object_dim=CO, num_classes=3, variant="official", num_heads=4)
    assert isinstance(head, STAGEHead) and head.temporal_radius == 0.0 and head.dim == CA + 4
    assert head.layers[0].fc_h.bias is None and head.layers[0].attn_b is None
    with pytest.raises(ValueError, match="no option proximity"):
        STAGEHead(CA, CO, 3, variant="official", proximity=False)
    with pytest.raises(ValueError, match="object_dim 8 < actor_dim 12"):
        STAGEHead(CA, 8, 3, variant="official")
    with pytest.raises(ValueError, match="2 or 4 heads"):
        STAGEHead(CA, CO, 3, variant="official", num_heads=3)
    with pytest.raises(ValueError, match="unknown variant"):
        STAGEHead(CA, CO, 3, variant="paper")
    x = batch(ITEMS).to("cpu", torch.float32)
    head.train()
    out = head(x)
    out.sum().backward()
    assert out.shape == (x.num_actors, 3) and all(p.grad is not None for p in head.parameters())
