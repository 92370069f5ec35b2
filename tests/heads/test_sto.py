import math

import torch
from torch.testing import assert_close

from stagecache.heads import build_head
from tests.heads.relation_inputs import make_input, randomise, rows_of
from tests.comparisons import assert_informative


def reference_nl(block, s, lt, allowed):
    """Loop-based LFB non-local block: one query at a time, explicit softmax."""
    out = []
    for i in range(s.shape[0]):
        q = block.theta.weight @ s[i] + block.theta.bias
        keys = [j for j in range(lt.shape[0]) if allowed(i, j)]
        logits = torch.stack([q @ (block.phi.weight @ lt[j] + block.phi.bias) for j in keys]) / math.sqrt(q.numel())
        w = torch.exp(logits - logits.max())
        w = w / w.sum()
        h = sum(w[n] * (block.g.weight @ lt[j] + block.g.bias) for n, j in enumerate(keys))
        h = torch.nn.functional.layer_norm(h, h.shape, block.norm.weight, block.norm.bias)
        out.append(s[i] + block.out.weight @ torch.relu(h) + block.out.bias)
    return torch.stack(out)


def test_smoke_forward_backward():
    x = make_input([0, 0, 1], [1.0, 2.0, 1.0], [2, 3, 1])
    head = build_head("sto", actor_dim=6, object_dim=5, num_classes=4, hidden_dim=8, num_layers=1)
    assert head.temporal_radius == 0 and head.requires == frozenset()
    out = head(x)
    assert out.shape == (6, 4)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_matches_reference_non_local():
    x = make_input([0, 0], [1.0, 2.0], [3, 2])
    head = build_head("sto", actor_dim=6, object_dim=5, num_classes=4, hidden_dim=8, num_layers=2).eval()
    randomise(head)
    s = head.reduce[0].weight @ x.actor_feat.T
    s = (s + head.reduce[0].bias[:, None]).T
    same = lambda i, j: bool(x.actor_kf[i] == x.actor_kf[j])
    for block in head.blocks:
        s = reference_nl(block, s, s, same)
    assert_informative(s, "reference non-local output", min_len=2)
    expected = head.classifier(torch.cat((x.actor_feat, s), dim=1))
    assert_close(head(x), expected, rtol=1e-4, atol=1e-5)


def test_permutation_equivariant_and_keyframe_local():
    x = make_input([0, 0], [1.0, 2.0], [3, 3], seed=1)
    head = build_head("sto", actor_dim=6, object_dim=5, num_classes=4, hidden_dim=8).eval()
    randomise(head, seed=1)
    out = head(x)
    perm = torch.tensor([4, 1, 0, 5, 2, 3])
    xp = make_input([0, 0], [1.0, 2.0], [3, 3], seed=1)
    xp.actor_feat, xp.actor_box, xp.actor_kf = x.actor_feat[perm], x.actor_box[perm], x.actor_kf[perm]
    assert_close(head(xp), out[perm])
    # Another keyframe's actors change nothing; an actor of the same keyframe does.
    x.actor_feat[rows_of(x, 1)[0]] += 5.0
    out2 = head(x)
    assert_close(out2[rows_of(x, 0)], out[rows_of(x, 0)])
    x.actor_feat[rows_of(x, 0)[0]] += 5.0
    assert not torch.allclose(head(x)[rows_of(x, 0)[1]], out[rows_of(x, 0)[1]])
