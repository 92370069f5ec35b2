import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from stagecache.heads import build_head
from stagecache.heads.acar import HR2OBlock, RelationNetworkHR2O
from tests.heads.relation_inputs import make_input, randomise, rows_of
from tests.comparisons import assert_informative

KW = dict(actor_dim=6, object_dim=5, num_classes=4, context_dim=5, reduce_dim=7, hidden_dim=8)


def inputs(seed=0, kf_video=(0, 0, 1), kf_time=(1.0, 2.0, 1.0), counts=(2, 3, 1)):
    return make_input(list(kf_video), list(kf_time), list(counts), context_hw=(3, 4), context_dim=5, seed=seed)


def test_smoke_forward_backward_all_variants():
    x = inputs()
    for name, extra in (("acar", {}), ("acar_rn", {}), ("acar", {"hr2o": "rn"})):
        head = build_head(name, **KW, **extra)
        assert head.requires == frozenset({"context"}) and head.temporal_radius == 0
        out = head(x)
        assert out.shape == (6, 4)
        out.sum().backward()
        assert torch.isfinite(head.classifier.weight.grad).all()
    head = build_head("acar", **KW, bank=True)
    assert head.temporal_radius == 10.5
    maps = head.first_order_maps(x)
    assert maps.shape == (6, 8, 3, 4)
    x.extras = {"bank_maps": maps.detach(), "bank_kf": x.actor_kf.clone()}
    head(x).sum().backward()


def reference_hr2o(block, f, mem, allowed):
    """HR²O Eq. 1-2 with explicit loops over actors and spatial locations."""
    q, k, v = block.q(f), block.k(mem), block.v(mem)
    n, d, h, w = q.shape
    out = torch.zeros_like(q)
    for i in range(n):
        keys = [j for j in range(mem.shape[0]) if allowed(i, j)]
        for y in range(h):
            for xx in range(w):
                logits = torch.stack([q[i, :, y, xx] @ k[j, :, y, xx] for j in keys]) / math.sqrt(d)
                att = torch.exp(logits - logits.max())
                att = att / att.sum()
                out[i, :, y, xx] = sum(att[m] * v[j, :, y, xx] for m, j in enumerate(keys))
    normed = F.layer_norm(out, (d, h, w)) * block.norm.weight[:, None, None] + block.norm.bias[:, None, None]
    return f + block.out(torch.relu(normed))


def test_hr2o_block_matches_reference():
    torch.manual_seed(0)
    block = HR2OBlock(4).eval()
    randomise(block, seed=5)
    f, mem = torch.randn(4, 4, 3, 3), torch.randn(5, 4, 3, 3)
    kf_q, kf_m = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 0, 2])
    allowed = lambda i, j: bool(kf_q[i] == kf_m[j])
    mask = kf_q[:, None] == kf_m[None, :]
    want = reference_hr2o(block, f, mem, allowed)
    assert_informative(want - f, "reference HR2O update (output minus its residual input)", min_len=2)
    assert_close(block(f, mem, mask), want, rtol=1e-4, atol=1e-5)
    # Gradients too: the attention's backward runs through its own contiguous-gradient step.
    f, mem = f.requires_grad_(), mem.requires_grad_()
    g = torch.randn(4, 4, 3, 3)
    ours = torch.autograd.grad((block(f, mem, mask) * g).sum(), (f, mem, block.q.weight, block.v.weight))
    ref = torch.autograd.grad((reference_hr2o(block, f, mem, allowed) * g).sum(),
                              (f, mem, block.q.weight, block.v.weight))
    for a, b in zip(ours, ref):
        assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_relation_network_matches_eq_3_4():
    rn = RelationNetworkHR2O(3, 2, 4).eval()
    randomise(rn, seed=6)
    a, ctx = torch.randn(5, 3), torch.randn(2, 2, 3, 3)
    akf = torch.tensor([0, 1, 0, 0, 1])
    w1 = torch.cat((rn.w_i.weight, rn.w_j.weight, rn.w_x.weight[:, :, 0, 0]), dim=1)[:, :, None, None]
    expected = []
    for i in range(5):
        hs = []
        for j in range(5):
            if akf[j] != akf[i]:
                continue
            tiled = torch.cat((a[i], a[j]))[:, None, None].expand(-1, 3, 3)
            triplet = torch.cat((tiled, ctx[akf[i]]))[None]  # [A^i, A^j, X_xy]
            hs.append(rn.conv2(torch.relu(F.conv2d(triplet, w1, rn.w_i.bias)))[0])
        expected.append(torch.stack(hs).mean(0))
    assert_close(rn(a, akf, ctx), torch.stack(expected), rtol=1e-4, atol=1e-5)


def test_hr2o_attention_restricted_to_same_keyframe():
    for hr2o in ("nl", "rn"):
        x = inputs(seed=1)
        head = build_head("acar", **KW, hr2o=hr2o).eval()
        randomise(head, seed=1)
        out = head(x)
        x.actor_feat[rows_of(x, 1)[0]] += 3.0  # another keyframe of the same video
        assert_close(head(x)[rows_of(x, 0)], out[rows_of(x, 0)])
        # ... but a co-actor of the same keyframe changes the others' outputs (second order).
        assert not torch.allclose(head(x)[rows_of(x, 1)[1]], out[rows_of(x, 1)[1]])
        perm = torch.tensor([3, 0, 5, 1, 4, 2])
        x.actor_feat, x.actor_box, x.actor_kf = x.actor_feat[perm], x.actor_box[perm], x.actor_kf[perm]
        before = head(x)
        x.actor_feat, x.actor_box, x.actor_kf = x.actor_feat[perm.argsort()], x.actor_box[perm.argsort()], x.actor_kf[perm.argsort()]
        assert_close(before, head(x)[perm])


def test_acfb_window_bounds():
    # kf0 query (video 0, t=50); kf1 t=60 (inside +-10 s), kf2 t=61 (outside), kf3 video 1 t=50.
    x = inputs(seed=2, kf_video=(0, 0, 0, 1), kf_time=(50.0, 60.0, 61.0, 50.0), counts=(2, 1, 1, 1))
    head = build_head("acar", **KW, bank=True).eval()
    randomise(head, seed=2)
    bank = torch.randn(5, 8, 3, 4)
    bank_kf = torch.tensor([0, 1, 2, 3, 0])
    x.extras = {"bank_maps": bank, "bank_kf": bank_kf}
    q = rows_of(x, 0)
    out = head(x)[q]
    for m in (2, 3):  # outside the window, other video
        b2 = bank.clone()
        b2[m] += 2.0
        x.extras = {"bank_maps": b2, "bank_kf": bank_kf}
        assert_close(head(x)[q], out)
    b2 = bank.clone()
    b2[1] += 2.0  # 10 s away: inside
    x.extras = {"bank_maps": b2, "bank_kf": bank_kf}
    assert not torch.allclose(head(x)[q], out)
    # Removing the irrelevant entries altogether changes nothing either.
    x.extras = {"bank_maps": bank[[0, 1, 4]], "bank_kf": bank_kf[[0, 1, 4]]}
    assert_close(head(x)[q], out)


def reference_first_order(head, x, *, tile_actor, relative):
    """First-order maps with the location option written directly: one 1x1 conv over the
    concatenation [tile(A'); X'; location] (the location embedding as in ACRN), ReLU, conv2, ReLU."""
    from tests.heads.test_acrn import reference_location

    a = F.relu(head.actor_reduce(x.actor_feat))
    ctx = F.relu(head.context_reduce(x.context))
    h, w = ctx.shape[-2:]
    parts = [head.conv1_context.weight[:, :, 0, 0], head.conv1_loc.weight[:, :, 0, 0]]
    if tile_actor:
        parts.insert(0, head.conv1_actor.weight)
    weight = torch.cat(parts, dim=1)[:, :, None, None]
    bias = head.conv1_actor.bias if tile_actor else head.conv1_context.bias
    maps = []
    for i in range(x.num_actors):
        cat = [ctx[x.actor_kf[i]], reference_location(x.actor_box[i], h, w, relative)]
        if tile_actor:
            cat.insert(0, a[i][:, None, None].expand(-1, h, w))
        f = F.relu(F.conv2d(torch.cat(cat)[None], weight, bias))
        maps.append(F.relu(head.conv2(f))[0])
    return torch.stack(maps)


def test_location_option_matches_direct_concatenation():
    x = inputs(seed=6)
    for tile_actor, relative in ((True, False), (False, True)):
        head = build_head("acar", **KW, location=True, relative_location=relative, tile_actor=tile_actor,
                          pool="max").eval()
        randomise(head, seed=6)
        assert (head.conv1_actor is not None) == tile_actor
        assert (head.conv1_context.bias is None) == tile_actor  # one bias in conv1, wherever it sits
        maps = reference_first_order(head, x, tile_actor=tile_actor, relative=relative)
        assert_close(head.first_order_maps(x), maps, rtol=1e-4, atol=1e-4)
        out = head(x)
        # HR²O then max pooling, written out: the logits from the maps above.
        mask = x.actor_kf[:, None] == x.actor_kf[None, :]
        f = maps
        for block in head.blocks:
            f = block(f, f, mask)
        pooled = torch.cat((x.actor_feat, f.amax(dim=(2, 3))), dim=1)
        assert_close(out, head.classifier(pooled), rtol=1e-4, atol=1e-4)
        x.actor_box[0] = torch.tensor([0.0, 0.0, 0.3, 0.3])  # where the actor is now matters
        assert not torch.allclose(head(x)[0], out[0])
        x = inputs(seed=6)


def test_option_errors():
    with pytest.raises(ValueError, match="tile_actor=False needs location=True"):
        build_head("acar", **KW, tile_actor=False)
    with pytest.raises(ValueError, match="relative_location=True needs location=True"):
        build_head("acar", **KW, relative_location=True)
    with pytest.raises(ValueError, match="unknown pool 'median'; valid: avg, max"):
        build_head("acar_rn", **KW, pool="median")
