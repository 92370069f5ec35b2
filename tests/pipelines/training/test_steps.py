import torch
from torch import nn

from stagecache.pipelines.training.steps import make_optimizer


def test_fused_adam_on_cpu_matches_the_reference_update():
    torch.manual_seed(0)
    p1 = nn.Parameter(torch.randn(7, 3))
    p2 = nn.Parameter(p1.detach().clone())
    fused = make_optimizer([p1], 1e-2, 0.0, torch.device("cpu"))
    plain = torch.optim.Adam([p2], lr=1e-2, foreach=False)
    assert fused.defaults["fused"]
    for step in range(3):
        g = torch.randn(7, 3)
        p1.grad, p2.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-7)


def test_an_epoch_trains_the_same_weights_whatever_the_chunking():
    """train_epoch gathers batches a chunk at a time: one batch per chunk and the whole epoch in
    one chunk give bit-identical weights, loss and keyframe counts."""
    import numpy as np

    from stagecache.heads.stage import STAGEHead
    from stagecache.pipelines.training.split_batches import epoch_batches
    from stagecache.pipelines.training.steps import LossContext, SplitContext, train_epoch
    from tests.pipelines.training.test_split_batches import _graph

    g = _graph(np.random.default_rng(3), n_videos=3, n_kf=8)
    g.actor_labels = torch.from_numpy(np.random.default_rng(4).integers(0, 2, (g.num_actors, 3)).astype(np.uint8))
    results = []
    for chunk_bytes in (1, 1 << 30):
        torch.manual_seed(0)
        head = STAGEHead(5, 2, 3, num_layers=2, num_heads=2)
        opt = make_optimizer(head.parameters(), 1e-2, 0.0, torch.device("cpu"))
        split = SplitContext(g, head.temporal_radius, torch.device("cpu"), amp=False)
        batches = epoch_batches(g.query_keyframes(), 3, "random", 0, 0)
        stats = train_epoch(head, opt, split, LossContext("bce", torch.zeros(0, dtype=torch.long)), batches,
                            chunk_bytes=chunk_bytes)
        results.append((stats, head.state_dict()))
    (s1, w1), (s2, w2) = results
    assert s1["train_loss"] == s2["train_loss"] and s1["seen"] == s2["seen"] == len(g.query_keyframes())
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
