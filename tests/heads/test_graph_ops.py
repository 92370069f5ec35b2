"""heads/graph_ops.py: the index_select gather, blocked aggregation with values shared by the
heads, and the matmul dtype under autocast."""
from __future__ import annotations

import torch
from torch.testing import assert_close

from stagecache.heads.graph_ops import blocked_aggregate, build_block_graph, compute_dtype, link_keyframes, take


def test_take_is_advanced_indexing_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[0, 5, 5], [2, 0, 1]])  # repeats: the backward must accumulate
    out = take(x, index)
    assert out.shape == (2, 3, 3, 4)
    assert torch.equal(out, x[index])
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * upstream).sum(), x)
    (want,) = torch.autograd.grad((x[index] * upstream).sum(), x)
    assert_close(grad, want)


def _graph():
    # Video 0 at t = 0, 1, 2 and video 1 at t = 5: 3 + 2 + 3 + 1 nodes.
    kf_video, kf_time = torch.tensor([0, 0, 0, 1]), torch.tensor([0.0, 1.0, 2.0, 5.0], dtype=torch.float64)
    node_kf = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])
    tgt, src = link_keyframes(kf_video, kf_time, 1.0)
    return build_block_graph(node_kf, torch.ones(9, dtype=torch.bool), 4, tgt, src)


def _definition(gr, weights, values):
    """sum over the pairs of each target keyframe of weights @ the source keyframe's padded values."""
    padded = gr.to_padded(values.transpose(0, 1)).transpose(1, 2)  # (K, H or 1, n_max, F)
    want = weights.new_zeros((weights.shape[1], gr.num_kf, gr.n_max, values.shape[-1]))
    for q in range(gr.pair_tgt.shape[0]):
        want[:, gr.pair_tgt[q]] += weights[q] @ padded[gr.pair_src[q]]
    return want


def _weights(gr, h, g):
    return torch.rand(gr.pair_tgt.shape[0], h, gr.n_max, gr.n_max, generator=g, dtype=torch.float64) * gr.mask[:, None]


def test_shared_values_equal_the_values_repeated_per_head():
    gr = _graph()
    g = torch.Generator().manual_seed(1)
    h = 3
    weights = _weights(gr, h, g)
    values = torch.randn(9, 5, generator=g, dtype=torch.float64)  # (N, F)
    shared = blocked_aggregate(weights, values, gr)  # (H, K, n_max, 5)
    assert shared.shape == (h, gr.num_kf, gr.n_max, 5)
    # The per-head path, on the layout the layer gives it (a transposed (N, H, F)).
    per_head = values.expand(h, -1, -1).transpose(0, 1).contiguous().transpose(0, 1)  # (H, N, F)
    assert_close(shared, blocked_aggregate(weights, per_head, gr))
    assert_close(shared, _definition(gr, weights, values[None]).expand(h, -1, -1, -1))
    # The first R slots only.
    assert_close(blocked_aggregate(weights[:, :, :2], values, gr), shared[:, :, :2])


def test_per_head_values_and_gradients_equal_the_definition():
    gr = _graph()
    g = torch.Generator().manual_seed(2)
    weights = _weights(gr, 2, g).requires_grad_()
    values = torch.randn(9, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)  # (N, H, F)
    out = blocked_aggregate(weights, values.transpose(0, 1), gr)  # (H, K, n_max, 4)
    want = _definition(gr, weights, values.transpose(0, 1))
    # Empty slots (keyframes with fewer nodes than n_max) have no weights: zero rows.
    assert_close(out, want)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64)
    gw, gv = torch.autograd.grad((out * upstream).sum(), (weights, values))
    want_gw, want_gv = torch.autograd.grad((want * upstream).sum(), (weights, values))
    assert_close(gv, want_gv)
    # Masked entries multiply node 0's values (not a zero padding): their weight gradient is not
    # the definition's, and the softmax's backward multiplies it by their weight, 0.
    keep = gr.mask[:, None].expand_as(gw)
    assert_close(gw[keep], want_gw[keep])
    assert not torch.equal(gw[~keep], want_gw[~keep])  # the test sees masked entries at all


def test_compute_dtype_follows_autocast_for_float32_only():
    x32, x64 = torch.zeros(2), torch.zeros(2, dtype=torch.float64)
    assert compute_dtype(x32) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(x32) == torch.bfloat16
        assert compute_dtype(x64) == torch.float64
