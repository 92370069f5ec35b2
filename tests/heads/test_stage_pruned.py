"""STAGE computes each layer only for the nodes a later layer reads (heads/stage.py,
`_forward_pruned`): the query actors' logits and the parameters' gradients equal those of the
loop transcription of the paper and of the whole-graph computation, for partial query sets."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from stagecache.heads.batch import HeadInput
from tests.heads.test_stage import VARIANTS, WIDE, build, make_input, reference

# Video 0 at t = 0..6 (two links away from t = 3 on each side), video 1 at t = 1, 2.
KFS = [(0, t, 2, 2) for t in range(7)] + [(1, 1, 1, 1), (1, 2, 2, 0)]
QUERIES = [  # query actors (rows of actor_feat): a middle keyframe, an end plus another video, one actor
    [6, 7], [0, 1, 15, 16], [9],
]


def with_queries(x: HeadInput, rows: list[int]) -> HeadInput:
    is_query = torch.zeros(x.num_actors, dtype=torch.bool)
    is_query[rows] = True
    return HeadInput(**{**vars(x), "is_query": is_query})


@pytest.mark.parametrize("kw", VARIANTS + [{"num_layers": 3}, {"num_layers": 1}, WIDE],
                         ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_query_actors_match_the_reference_and_the_whole_graph(kw):
    head = build(**kw)
    dims = {k: v for k, v in kw.items() if k in WIDE}  # WIDE: computed on zero-padded widths
    ref_kw = {k: v for k, v in kw.items() if k not in ("num_heads", "num_layers", *WIDE)}
    for rows in QUERIES:
        x = with_queries(make_input(KFS, **dims), rows)
        out = head(x)
        assert out.shape == (x.num_actors, 3)
        assert_close(out[rows], reference(head, x, **ref_kw)[rows])
        whole, _ = head.forward_with_attention(x)  # every node, every layer
        assert_close(out[rows], whole[rows])
        # The gradients of the query logits are the whole graph's too.
        head.zero_grad()
        (out[rows] ** 2).sum().backward()
        grads = [p.grad.clone() for p in head.parameters()]
        head.zero_grad()
        (head.forward_with_attention(x)[0][rows] ** 2).sum().backward()
        for p, g in zip(head.parameters(), grads):
            assert_close(g, p.grad)


def test_no_query_actor_gives_zeros_and_context_beyond_the_radius_is_dropped():
    head = build()
    x = with_queries(make_input(KFS), [])
    assert torch.equal(head(x), torch.zeros(x.num_actors, 3, dtype=torch.float64))
    # Query at t = 3: t = 0 and t = 6 are 3 s away, beyond the 2-layer radius: changing them is
    # invisible, and the output does not depend on whether they are in the batch.
    x = with_queries(make_input(KFS), [6, 7])
    y = with_queries(make_input(KFS, seed=9), [6, 7])
    far = [0, 1, 12, 13]  # actors of t = 0 and t = 6
    feat = x.actor_feat.clone()
    feat[far] = y.actor_feat[far]
    assert_close(head(HeadInput(**{**vars(x), "actor_feat": feat}))[[6, 7]], head(x)[[6, 7]])
