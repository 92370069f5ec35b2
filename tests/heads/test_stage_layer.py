"""One STAGE graph-attention layer (heads/stage_layer.py): computing a few receiving rows gives
those rows of the whole layer."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from stagecache.heads.graph_ops import target_first_graph
from tests.heads.test_stage import WIDE, build, make_input
from tests.heads.test_stage_pruned import KFS


@pytest.mark.parametrize("kw", [{}, {"proximity": False}, {"num_heads": 3}, {"attention": "dot"},
                                {"adjacency": "feature"}, WIDE], ids=lambda kw: ",".join(kw) or "default")
def test_a_layer_computing_few_rows_equals_the_whole_layer_on_them(kw):
    """With few receiving rows the GAT layer aggregates f and applies each head's FC1 after (the
    fold, `_folds`): the same rows as the whole layer, values and gradients."""
    head = build(**kw)
    x = make_input(KFS, **{k: v for k, v in kw.items() if k in WIDE})
    f, centres, node_kf, is_actor = head.node_features(x)
    whole_graph = head.build_graph(x, node_kf, is_actor)
    rows = torch.tensor([0, 6, 12])  # the first actor of keyframes 0, 3 and 6: slot 0 (r = 1)
    # The graph _forward_pruned builds for them: their keyframes first, read from every keyframe.
    is_tgt = torch.zeros(x.num_keyframes, dtype=torch.bool)
    is_tgt[node_kf[rows]] = True
    g = target_first_graph(node_kf, is_actor, torch.ones_like(is_tgt), is_tgt, whole_graph.pair_tgt,
                           whole_graph.pair_src)
    layer = head.layers[0]
    want_fold = kw.get("attention", "gat") == "gat" and kw.get("adjacency", "box") == "box"
    assert layer._folds(f.shape[0], len(rows), g, 1) == want_fold
    assert not layer._folds(f.shape[0], f.shape[0], whole_graph, whole_graph.n_max)  # every row: no
    fr = f.detach().requires_grad_(True)
    out = layer(fr, centres, g, rows=rows)
    (grad,) = torch.autograd.grad(out.square().sum(), fr)
    fw = f.detach().requires_grad_(True)
    whole = layer(fw, centres, whole_graph)[rows]
    (want,) = torch.autograd.grad(whole.square().sum(), fw)
    assert_close(out, whole)
    assert_close(grad, want)
