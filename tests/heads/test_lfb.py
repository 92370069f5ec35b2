import torch
from torch.testing import assert_close

from stagecache.heads import build_head
from tests.heads.relation_inputs import make_input, randomise, rows_of
from tests.heads.test_sto import reference_nl
from tests.comparisons import assert_informative

# kf0 is the query (video 0, t=100); kf1 at 130 s is inside +-30 s, kf2 at 131 s is outside,
# kf3 is another video at the same time.
KF_VIDEO = [0, 0, 0, 1]
KF_TIME = [100.0, 130.0, 131.0, 100.0]


def build(**kw):
    head = build_head("lfb", actor_dim=6, object_dim=5, num_classes=4, hidden_dim=8, **kw).eval()
    randomise(head)
    return head


def test_smoke_forward_backward():
    x = make_input(KF_VIDEO, KF_TIME, [2, 1, 2, 1], query_kf=[0])
    head = build_head("lfb", actor_dim=6, object_dim=5, num_classes=4, hidden_dim=8)
    assert head.temporal_radius == 30.0
    out = head(x)
    assert out.shape == (6, 4)
    out[x.is_query].sum().backward()
    assert torch.isfinite(head.st_reduce[0].weight.grad).all()


def test_window_bounds():
    x = make_input(KF_VIDEO, KF_TIME, [2, 1, 2, 1])
    head = build()
    q = rows_of(x, 0)
    out = head(x)[q]
    for kf in (2, 3):  # outside the window / other video: no effect
        x2 = make_input(KF_VIDEO, KF_TIME, [2, 1, 2, 1])
        x2.actor_feat[rows_of(x2, kf)] += 3.0
        assert_close(head(x2)[q], out)
    x2 = make_input(KF_VIDEO, KF_TIME, [2, 1, 2, 1])
    x2.actor_feat[rows_of(x2, 1)] += 3.0  # exactly 30 s away: inside
    assert not torch.allclose(head(x2)[q], out)
    # Dropping out-of-window keyframes from the batch does not change the query's output.
    x3 = make_input(KF_VIDEO[:2], KF_TIME[:2], [2, 1])
    x3.actor_feat, x3.actor_box = x.actor_feat[:3], x.actor_box[:3]
    assert_close(head(x3)[rows_of(x3, 0)], out)


def test_matches_reference_and_window_keyword():
    x = make_input(KF_VIDEO, KF_TIME, [2, 1, 2, 1], seed=3)
    head = build(window=62.0)  # +-31 s: kf2 is now in
    assert head.temporal_radius == 31.0
    r = head.st_reduce[0]
    s = x.actor_feat @ r.weight.T + r.bias
    lt = x.actor_feat @ head.lt_reduce[0].weight.T + head.lt_reduce[0].bias
    vid, t = x.kf_video[x.actor_kf], x.kf_time[x.actor_kf]
    inside = lambda i, j: bool(vid[i] == vid[j]) and abs(float(t[i] - t[j])) <= 31.0
    for block in head.blocks:
        s = reference_nl(block, s, lt, inside)
    assert_informative(s, "reference feature-bank operator output", min_len=2)
    expected = head.classifier(torch.cat((x.actor_feat, s), dim=1))
    assert_informative(expected, "reference logits", min_len=2)
    assert_close(head(x), expected, rtol=1e-4, atol=1e-5)


def test_only_query_keyframes_are_computed():
    head = build()
    full = head(make_input(KF_VIDEO, KF_TIME, [2, 1, 2, 1], seed=5))
    x = make_input(KF_VIDEO, KF_TIME, [2, 1, 2, 1], seed=5, query_kf=[0])
    out = head(x)
    assert_close(out[x.is_query], full[x.is_query])
    assert bool((out[~x.is_query] == 0).all())
