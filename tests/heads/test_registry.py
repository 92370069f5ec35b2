"""Every head of `heads.HEADS` against the declared contract (heads/protocol.py): the required
forward and backward, and each optional capability callable with its documented result."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from stagecache.heads import HEADS, Attention, CapabilityError, Head, HeadInput, build_head
from tests.heads.test_stage import CA, CO, KFS, NC, make_input

# Narrow widths keep the capability checks fast (the smoke test runs the registry defaults).
SMALL = {"acar": dict(reduce_dim=8, hidden_dim=8), "acar_rn": dict(reduce_dim=8, hidden_dim=8),
         "acrn": dict(relation_dim=8, out_dim=8), "igmn": dict(hidden_dim=8, memory_clips=2),
         "lfb": dict(hidden_dim=8), "sto": dict(hidden_dim=8),
         "tonly": dict(d_model=8, nhead=2, dim_feedforward=8), "sonly": dict(d_model=8, nhead=2, dim_feedforward=8)}
# Every registry entry, plus configurations whose capabilities differ from their defaults.
VARIANTS = [(name, {}) for name in sorted(HEADS)] + [("igmn", {"dam": True, "mem_reduce_dim": 4})]


def with_levels(x: HeadInput, requires: frozenset) -> HeadInput:
    """Add the optional store levels a head declares in `requires` (random, actor_dim channels)."""
    g = torch.Generator().manual_seed(7)
    a, k = x.num_actors, x.num_keyframes
    if "roi" in requires:
        x.actor_roi = torch.randn(a, CA, 4, 4, generator=g)
    if "temporal" in requires:
        x.actor_temporal = torch.randn(a, 4, CA, generator=g)
    if "context" in requires:
        x.context = torch.randn(k, CA, 6, 6, generator=g)
    if "tracks" in requires:
        x.actor_track = torch.arange(a) % 3
    return x


@pytest.mark.parametrize("name", sorted(HEADS))
def test_registry_smoke_forward_backward(name):
    head = build_head(name, actor_dim=CA, object_dim=CO, num_classes=NC)
    assert isinstance(head, Head)
    assert isinstance(head.temporal_radius, float) and isinstance(head.requires, frozenset)
    x = with_levels(make_input(KFS, dtype=torch.float32), head.requires)
    out = head(x)
    assert out.shape == (x.num_actors, NC)
    out[x.is_query].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def _small(name: str, kw: dict):
    torch.manual_seed(0)
    head = build_head(name, actor_dim=CA, object_dim=CO, num_classes=NC, **(SMALL.get(name, {}) | kw)).eval()
    x = with_levels(make_input(KFS, dtype=torch.float32), head.requires)
    return head, x


@pytest.mark.parametrize("name,kw", VARIANTS, ids=lambda v: v if isinstance(v, str) else ",".join(v) or "default")
def test_declared_capabilities(name, kw):
    head, x = _small(name, kw)
    assert isinstance(head, Head)
    assert all(isinstance(f, bool) for f in (head.bank, head.has_aux_loss, head.has_first_order_maps))
    assert not head.bank  # registry defaults read no stored bank (acar's bank=True: tests/heads/test_acar.py)
    with torch.no_grad():
        ref = head(x)

        # Auxiliary loss: returned with the logits of the same forward, a finite scalar; 0 for heads
        # that declare none, and the logits are forward's.
        labels = (torch.rand(x.num_actors, NC, generator=torch.Generator().manual_seed(3)) > 0.5).float()
        logits, aux = head.forward_with_aux(x, labels)
        assert_close(logits, ref, rtol=0, atol=0)
        assert aux.ndim == 0 and bool(torch.isfinite(aux))
        if not head.has_aux_loss or (name == "igmn" and not kw.get("dam")):
            assert float(aux) == 0.0
        else:  # labels are an explicit argument and change the loss
            _, aux_unlabelled = head.forward_with_aux(x, None)
            assert float(aux) > 0 and float(aux) != float(aux_unlabelled)

        # Attention: the weights of that very forward (same logits), in the documented layout.
        logits, att = head.forward_with_attention(x)
        assert_close(logits, ref, rtol=0, atol=0)
        if name in ("stage", "acar"):
            assert isinstance(att, Attention) and att.weights
            _check_attention(att, x)
        else:
            assert att is None

        # First-order maps: (A, C, H, W) where declared, a CapabilityError elsewhere.
        if head.has_first_order_maps:
            maps = head.first_order_maps(x)
            assert maps.ndim == 4 and maps.shape[0] == x.num_actors
        else:
            with pytest.raises(CapabilityError, match="first_order_maps"):
                head.first_order_maps(x)

    # Classifier: parameters of the head that end in the logits (the bias of the last layer is (NC,)).
    params = list(head.classifier_parameters())
    assert params and {id(p) for p in params} <= {id(p) for p in head.parameters()}
    assert params[-1].shape == (NC,)
    # Only those parameters move the logits through the classifier: zeroing them zeroes the output.
    with torch.no_grad():
        for p in params:
            p.zero_()
        assert float(head(x).abs().max()) == 0.0


def _check_attention(att: Attention, x: HeadInput) -> None:
    a = x.num_actors
    if att.kind == "graph":  # rows are softmaxes over the connected nodes (self-loops: never empty)
        assert len(att.connected) == len(att.weights)
        for w, c in zip(att.weights, att.connected):
            n = w.shape[0]
            assert w.shape == c.shape == (n, n) and n in (a, a + x.num_objects)
            assert float(w[~c].abs().max()) == 0.0
            assert_close(w.sum(1), torch.ones(n))
    else:  # "spatial": per location a softmax of each actor over the same keyframe's actors
        same = x.actor_kf[:, None] == x.actor_kf[None, :]
        for w in att.weights:
            assert w.shape[2:] == (a, a)
            assert float(w[:, :, ~same].abs().max()) == 0.0
            assert_close(w.sum(-1), torch.ones(w.shape[:3]))
