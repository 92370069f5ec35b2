import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from stagecache.heads import build_head
from tests.heads.relation_inputs import make_input, randomise, rows_of

KW = dict(actor_dim=6, object_dim=5, num_classes=4, context_dim=5, relation_dim=8, out_dim=7)


def inputs(seed=0):
    return make_input([0, 0, 1], [1.0, 2.0, 1.0], [2, 3, 1], context_hw=(4, 5), context_dim=5, seed=seed)


def test_smoke_forward_backward():
    x = inputs()
    head = build_head("acrn", **KW)
    assert head.requires == frozenset({"context"}) and head.temporal_radius == 0
    out = head(x)
    assert out.shape == (6, 4)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def reference_location(b, h, w, relative=False):
    """The location embedding cell by cell: box, cell corner (j/H, k/W), covered fraction of the
    cell (+ offset of the cell centre from the box centre and its length)."""
    loc = torch.zeros(10 if relative else 7, h, w)
    cx, cy = float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2
    for r in range(h):
        for c in range(w):
            loc[:4, r, c] = b
            loc[4, r, c], loc[5, r, c] = r / h, c / w
            ox = max(0.0, min(float(b[2]), (c + 1) / w) - max(float(b[0]), c / w)) * w
            oy = max(0.0, min(float(b[3]), (r + 1) / h) - max(float(b[1]), r / h)) * h
            loc[6, r, c] = ox * oy
            if relative:
                dx, dy = (c + 0.5) / w - cx, (r + 0.5) / h - cy
                loc[7:, r, c] = torch.tensor([dx, dy, (dx * dx + dy * dy) ** 0.5])
    return loc


def reference(head, x, *, tile_actor=True, relative=False, pool="avg"):
    """ACRN Eq. 2 written directly: concatenate [tile(a); box; F; l; raster] and apply g_theta as
    one 1x1 conv, then the 3x3 convs, average pooling, [a; f_RN] -> classifier. The options: no
    tiled actor, relative location channels, max pooling."""
    rel = head.relation
    parts = [rel.context_proj.weight[:, :, 0, 0], rel.loc_proj.weight[:, :, 0, 0]]
    if tile_actor:
        parts.insert(0, rel.actor_proj.weight)
    weight = torch.cat(parts, dim=1)[:, :, None, None]
    bias = rel.actor_proj.bias if tile_actor else rel.loc_proj.bias
    k, _, h, w = x.context.shape
    rows = []
    for i in range(x.num_actors):
        ctx = x.context[x.actor_kf[i]]
        ctx = ctx / ctx.norm(dim=0, keepdim=True) * rel.norm_context.scale
        cat = [ctx, reference_location(x.actor_box[i], h, w, relative)]
        if tile_actor:
            a = x.actor_feat[i] / x.actor_feat[i].norm() * rel.norm_actor.scale
            cat.insert(0, a[:, None, None].expand(-1, h, w))
        g = F.relu(F.conv2d(torch.cat(cat)[None], weight, bias))
        acc = head.accumulate(g)
        f_rn = (acc.mean(dim=(2, 3)) if pool == "avg" else acc.amax(dim=(2, 3)))[0]
        rows.append(torch.cat((x.actor_feat[i], f_rn)))
    return head.classifier(torch.stack(rows))


def test_matches_direct_concatenation():
    x = inputs(seed=2)
    head = build_head("acrn", **KW).eval()
    randomise(head, seed=2)
    assert head.relation.loc_proj.bias is None  # the paper's form: the bias sits in the actor slice
    assert_close(head(x), reference(head, x), rtol=1e-4, atol=1e-4)


def test_options_match_direct_concatenation():
    x = inputs(seed=3)
    head = build_head("acrn", **KW, tile_actor=False, pool="max", relative_location=True).eval()
    randomise(head, seed=3)
    rel = head.relation
    assert rel.actor_proj is None and rel.norm_actor is None and rel.loc_proj.bias is not None
    expected = reference(head, x, tile_actor=False, relative=True, pool="max")
    assert_close(head(x), expected, rtol=1e-4, atol=1e-4)

    def relation_part(x):  # the logits minus the classifier's direct actor-feature term
        return head(x) - x.actor_feat @ head.classifier.weight[:, :KW["actor_dim"]].T

    # Without the tiled actor, the relation part of an actor's logits ignores its own feature.
    before = relation_part(x)
    x.actor_feat = x.actor_feat + torch.randn_like(x.actor_feat)
    assert_close(relation_part(x), before, rtol=1e-4, atol=1e-4)


def test_unknown_pool_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown pool 'sum'; valid: avg, max"):
        build_head("acrn", **KW, pool="sum")


def test_own_keyframe_context_only_and_equivariant():
    x = inputs(seed=4)
    head = build_head("acrn", **KW).eval()
    randomise(head, seed=4)
    out = head(x)
    x.context[1] += 2.0  # another keyframe's context: no effect on keyframe 0's actors
    assert_close(head(x)[rows_of(x, 0)], out[rows_of(x, 0)])
    assert not torch.allclose(head(x)[rows_of(x, 1)], out[rows_of(x, 1)])
    perm = torch.tensor([5, 3, 0, 2, 1, 4])
    x.actor_feat, x.actor_box, x.actor_kf = x.actor_feat[perm], x.actor_box[perm], x.actor_kf[perm]
    out_p = head(x)
    x.actor_box[0] = torch.tensor([0.0, 0.0, 0.2, 0.2])  # the location embedding matters
    assert not torch.allclose(head(x)[0], out_p[0])
    assert_close(out_p[1:], head(x)[1:])
    x.context[1] -= 2.0
    x.actor_box[0] = inputs(seed=4).actor_box[perm][0]
    assert_close(head(x), out[perm])
