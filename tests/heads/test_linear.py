"""LinearHead: dropout + linear classifier on the actor feature."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from stagecache.heads import build_head
from stagecache.heads.batch import HeadInput
from stagecache.heads.linear import LinearHead


def make_input(a=5, o=3, ca=8, co=6, seed=0) -> HeadInput:
    g = torch.Generator().manual_seed(seed)
    return HeadInput(
        kf_video=torch.tensor([0, 1]), kf_time=torch.tensor([1.0, 2.0], dtype=torch.float64),
        actor_feat=torch.randn(a, ca, generator=g), actor_box=torch.rand(a, 4, generator=g),
        actor_kf=torch.arange(a) % 2, is_query=torch.ones(a, dtype=torch.bool),
        object_feat=torch.randn(o, co, generator=g), object_box=torch.rand(o, 4, generator=g),
        object_kf=torch.arange(o) % 2, object_class=torch.zeros(o, dtype=torch.long),
    )


def test_eval_is_affine_map_of_actor_feature():
    x = make_input()
    head = LinearHead(8, 6, 4).eval()
    ref = torch.stack([head.classifier.weight @ x.actor_feat[i] + head.classifier.bias for i in range(5)])
    assert_close(head(x), ref)
    # objects and other keyframes play no role
    y = make_input(seed=1)
    y.actor_feat = x.actor_feat
    assert_close(head(y), head(x))


def test_dropout_default_and_train_mode():
    head = LinearHead(8, 6, 4)
    assert head.dropout.p == 0.5 and head.temporal_radius == 0.0 and head.requires == frozenset()
    x = make_input(a=64)
    torch.manual_seed(0)
    assert not torch.allclose(head.train()(x), head.eval()(x))
    assert_close(LinearHead(8, 6, 4, dropout=0.0).train()(x).shape, torch.Size([64, 4]))


def test_registry_and_errors():
    head = build_head("linear", actor_dim=8, object_dim=6, num_classes=4, dropout=0.1)
    assert isinstance(head, LinearHead) and head.dropout.p == 0.1
    with pytest.raises(ValueError, match=r"actor_feat must be \(A, 9\)"):
        LinearHead(9, 6, 4)(make_input())
    with pytest.raises(ValueError, match="dropout"):
        LinearHead(8, 6, 4, dropout=1.0)
    with pytest.raises(KeyError, match="valid heads"):
        build_head("nope", actor_dim=8, object_dim=6, num_classes=4)
