"""heads/graph_ops.py: the index_select gather, blocked aggregation with values shared by the
heads, and the matmul dtype under autocast."""
from __future__ import annotations

import torch
from torch.testing import assert_close

from heads.graph_ops import blocked_aggregate, build_block_graph, compute_dtype, link_keyframes, take


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


def test_shared_values_equal_the_values_repeated_per_head():
    gr = _graph()
    g = torch.Generator().manual_seed(1)
    p, h, n = gr.pair_tgt.shape[0], 3, gr.n_max
    weights = torch.rand(p, h, n, n, generator=g, dtype=torch.float64) * gr.mask[:, None]
    values = torch.randn(gr.num_kf, 1, n, 5, generator=g, dtype=torch.float64)
    shared = blocked_aggregate(weights, values, gr)  # (K, H, n_max, 5)
    # The per-head path, on the layout it expects (a transposed (K, n_max, H, F) padding).
    per_head = values.expand(-1, h, -1, -1).transpose(1, 2).contiguous().transpose(1, 2)
    assert_close(shared, blocked_aggregate(weights, per_head, gr))
    # And the definition: sum over the pairs of each target keyframe.
    want = torch.zeros_like(shared)
    for q in range(p):
        want[gr.pair_tgt[q]] += weights[q] @ values[gr.pair_src[q]]
    assert_close(shared, want)
    # The first R slots only.
    assert_close(blocked_aggregate(weights[:, :, :2], values, gr), want[:, :, :2])


def test_compute_dtype_follows_autocast_for_float32_only():
    x32, x64 = torch.zeros(2), torch.zeros(2, dtype=torch.float64)
    assert compute_dtype(x32) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(x32) == torch.bfloat16
        assert compute_dtype(x64) == torch.float64
