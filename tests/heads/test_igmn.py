import math

import torch
from torch.testing import assert_close

from stagecache.core.boxes import box_iou_torch as box_iou
from stagecache.heads import build_head
from stagecache.heads.igmn import (OrderedTemporalAggregator, interference_geometry, ordered_neighbours, relaxed_bce,
                        relaxed_targets)
from tests.heads.relation_inputs import make_input, randomise, rows_of
from tests.heads.test_sto import reference_nl
from tests.comparisons import assert_informative

# Video 0 at t = 8..12 (query keyframe t=10), a keyframe 3 s away (outside L=2 clips), video 1.
KF_VIDEO = [0, 0, 0, 0, 0, 0, 1]
KF_TIME = [8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 10.0]
COUNTS = [2, 1, 2, 2, 1, 1, 2]
TRACKS = [1, 2, 1, 1, 2, 1, 2, 2, 1, 1, 2]
KW = dict(actor_dim=6, object_dim=5, num_classes=4, hidden_dim=8, memory_clips=2)


def inputs(seed=0, **kw):
    return make_input(KF_VIDEO, KF_TIME, COUNTS, tracks=TRACKS, query_kf=[2], seed=seed, **kw)


def build(seed=0, **kw):
    head = build_head("igmn", **{**KW, **kw}).eval()
    randomise(head, seed=seed)
    return head


def test_smoke_forward_backward_with_and_without_dam():
    x = inputs(roi_k=3, roi_dim=5)
    head = build_head("igmn", **KW)
    assert head.requires == frozenset({"tracks"}) and head.temporal_radius == 2.0
    out, aux = head.forward_with_aux(x, None)
    assert out.shape == (11, 4)
    assert float(aux) == 0.0
    out[x.is_query].sum().backward()
    head = build_head("igmn", **KW, dam=True, roi_dim=5, mem_reduce_dim=4)
    assert head.requires == frozenset({"tracks", "roi"})
    labels = (torch.rand(11, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    out, aux = head.forward_with_aux(x, labels)
    assert aux.ndim == 0 and float(aux.detach()) > 0 and torch.isfinite(aux)
    (out[x.is_query].sum() + aux).backward()
    assert torch.isfinite(head.dam.ffn_idt[0].weight.grad).all()
    assert head.dam.cls_sem.weight.grad.abs().sum() > 0


def test_ordered_aggregator_follows_track_and_time():
    track = torch.tensor([3, 5, 3, 3, -1, 5, 3])
    order = torch.tensor([2.0, 0.0, -1.0, 4.0, 1.0, 1.0, 0.5])
    prev, nxt = ordered_neighbours(track, order)
    for i in range(7):  # reference: nearest earlier / later node of the same known track
        same = [j for j in range(7) if j != i and track[j] == track[i] and track[i] >= 0]
        before = [j for j in same if order[j] < order[i]]
        after = [j for j in same if order[j] > order[i]]
        assert int(prev[i]) == (max(before, key=lambda j: order[j]) if before else -1)
        assert int(nxt[i]) == (min(after, key=lambda j: order[j]) if after else -1)
    agg = OrderedTemporalAggregator(4)
    randomise(agg, seed=1)
    h = torch.randn(7, 4)
    out = agg(h, prev, nxt)
    for i in range(7):
        msg = torch.zeros(4)
        if prev[i] >= 0:
            msg = msg + agg.w_prev(h[prev[i]])
        if nxt[i] >= 0:
            msg = msg + agg.w_next(h[nxt[i]])
        expected = h[i] + torch.relu(msg) if (prev[i] >= 0 or nxt[i] >= 0) else h[i]
        assert_close(out[i], expected)
    # Order matters: reversing time along track 3 swaps the directions and changes the output.
    prev_r, nxt_r = ordered_neighbours(track, -order)
    assert not torch.allclose(agg(h, prev_r, nxt_r)[0], out[0])


def reference_hgnn(head, x, center):
    """HGNN around `center` written with explicit loops over nodes (Sec. 3.2)."""
    h0 = head.node(x.actor_feat)
    nodes = [i for i in range(x.num_actors)
             if x.kf_video[x.actor_kf[i]] == x.kf_video[center]
             and abs(float(x.kf_time[x.actor_kf[i]] - x.kf_time[center])) <= head.temporal_radius + 1e-3]
    off = {i: round(float(x.kf_time[x.actor_kf[i]] - x.kf_time[center]) / head.clip_seconds) for i in nodes}
    tr = {i: int(x.actor_track[i]) for i in nodes}
    h = {i: h0[i] for i in nodes}
    outs = []
    for layer in range(head.num_layers):
        act = [i for i in nodes if off[i] % (2 ** layer) == 0]
        agg = head.intra_actor[layer]
        new = {}
        for i in act:
            same = [j for j in act if j != i and tr[i] >= 0 and tr[j] == tr[i]]
            before = [j for j in same if off[j] < off[i]]
            after = [j for j in same if off[j] > off[i]]
            msg, any_ = torch.zeros_like(h[i]), False
            if before:
                msg, any_ = msg + agg.w_prev(h[max(before, key=lambda j: off[j])]), True
            if after:
                msg, any_ = msg + agg.w_next(h[min(after, key=lambda j: off[j])]), True
            new[i] = h[i] + torch.relu(msg) if any_ else h[i]
        hs = torch.stack([new[i] for i in act])
        hs = reference_nl(head.intra_clip[layer], hs, hs, lambda a, b: bool(x.actor_kf[act[a]] == x.actor_kf[act[b]]))
        actors = [n for n, i in enumerate(act) if off[i] == 0]
        allowed = lambda a, b: off[act[b]] != 0 and not (tr[act[actors[a]]] >= 0 and tr[act[b]] == tr[act[actors[a]]])
        upd = reference_nl(head.inter_clip[layer], hs[actors], hs, allowed)
        for n, i in enumerate(act):
            h[i] = hs[n]
        for m, n in enumerate(actors):
            h[act[n]] = upd[m]
        outs.append(upd)
    return torch.stack(outs).mean(0)


def test_hgnn_matches_loop_reference_with_down_sampling():
    x = inputs(seed=2)
    head = build(seed=2, num_layers=2)
    q = rows_of(x, 2)
    want = reference_hgnn(head, x, 2)
    assert_informative(want, "reference HGNN node features", min_len=2)
    assert_close(head(x)[q], head.classifier(want), rtol=1e-4, atol=1e-5)


def test_memory_window_and_identity():
    x = inputs(seed=3)
    head = build(seed=3, num_layers=1)
    q = rows_of(x, 2)
    out = head(x)[q]
    for kf in (5, 6):  # 3 clips away (outside L=2) / another video: no effect
        x2 = inputs(seed=3)
        x2.actor_feat[rows_of(x2, kf)] += 3.0
        assert_close(head(x2)[q], out)
    x2 = inputs(seed=3)
    x2.actor_feat[rows_of(x2, 4)] += 3.0  # 2 clips away: inside
    assert not torch.allclose(head(x2)[q], out)
    # With one layer, the node at t=11 of track 1 reaches the track-1 actor only via the ordered
    # aggregator: giving it track 7 instead changes that actor's output.
    x2 = inputs(seed=3)
    x2.actor_track[rows_of(x2, 3)[0]] = 7
    assert not torch.allclose(head(x2)[q[0]], out[0])
    # Without tracks, the graph loses its intra-actor edges.
    x2 = inputs(seed=3)
    x2.actor_track[:] = -1
    assert not torch.allclose(head(x2)[q], out)


def test_aux_loss_pieces_match_equations():
    box = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.3, 0.2, 0.7, 0.8], [0.6, 0.0, 0.9, 0.3]])
    kf = torch.tensor([0, 0, 1])
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 1]])
    iou = box_iou(box, box) * (kf[:, None] == kf[None, :])
    rel = relaxed_targets(iou, labels)
    logits = torch.randn(3, 3, generator=torch.Generator().manual_seed(4))
    total = 0.0
    for i in range(3):
        for c in range(3):
            e = max(float(iou[i, j]) * float(labels[j, c]) for j in range(3))
            assert abs(float(rel[i, c]) - e) < 1e-6
            p = 1 / (1 + math.exp(-float(logits[i, c])))
            total -= float(labels[i, c]) * math.log(p) + (1 - e) * math.log(1 - p)
    assert_close(relaxed_bce(logits, labels, rel), torch.tensor(total / 3))
    geo, p = interference_geometry(box, kf, 2)
    # Actor 0's cells: centres at x in {0.2, 0.4}, y in {0.225, 0.475}; actor 1's box holds the
    # cells with x = 0.4 and y >= 0.2; actor 2 is another keyframe.
    assert p[0].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    ang = math.atan2(0.475 - 0.5, 0.4 - 0.5)
    assert_close(geo[0, :, 1, 1], torch.tensor([math.sin(ang), math.cos(ang), 1.0]), rtol=1e-4, atol=1e-5)
    assert p[2].sum() == 0
