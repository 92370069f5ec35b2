import torch
from torch import nn
from torch.testing import assert_close

from stagecache.heads import build_head
from tests.heads.relation_inputs import make_input, randomise, rows_of
from tests.comparisons import assert_informative

KW = dict(actor_dim=6, object_dim=5, num_classes=4, d_model=8, nhead=2, dim_feedforward=12)
# kf0 (video 0, t=100) is the query; kf1 at 130 s is inside +-30 s, kf2 at 131 s outside,
# kf3 another video.
KF_VIDEO, KF_TIME, COUNTS = [0, 0, 0, 1], [100.0, 130.0, 131.0, 100.0], [3, 2, 1, 2]


def tonly_input(seed=0):
    return make_input(KF_VIDEO, KF_TIME, COUNTS, temporal_t=3, temporal_dim=5, seed=seed)


def sonly_input(seed=0):
    return make_input(KF_VIDEO, KF_TIME, COUNTS, roi_k=2, roi_dim=5, seed=seed)


def test_smoke_forward_backward():
    for name, x in (("tonly", tonly_input()), ("sonly", sonly_input())):
        head = build_head(name, **KW, token_dim=5)
        assert head.requires == frozenset({"temporal" if name == "tonly" else "roi"})
        assert head.temporal_radius == (30.0 if name == "tonly" else 0.0)
        out = head(x)
        assert out.shape == (8, 4)
        out.sum().backward()
        assert torch.isfinite(head.embed.weight.grad).all()
        assert {id(p) for p in head.classifier_parameters()} == {id(head.classifier.weight), id(head.classifier.bias)}


def test_matches_per_keyframe_transformer_encoder():
    """Without a bank: for every keyframe and every position, the persons' tokens go through one
    standard transformer encoder layer; outputs are averaged over positions and classified."""
    x = sonly_input(seed=1)
    head = build_head("sonly", **KW, token_dim=5, num_layers=2).eval()
    # std 1: at 0.2 the fc layer's ReLU zeroes every actor, leaving the classifier's bias alone
    # to compare (the same logits for everyone)
    randomise(head, seed=1, std=1.0)
    layers = []
    for block in head.blocks:
        ref = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True).eval()
        ref.load_state_dict(block.state_dict())
        layers.append(ref)
    expected = torch.zeros(x.num_actors, 4)
    tokens = x.actor_roi.flatten(2).transpose(1, 2)  # (A, 4 positions, C)
    for kf in range(x.num_keyframes):
        idx = rows_of(x, kf)
        per_pos = []
        for p in range(tokens.shape[1]):
            seq = head.embed(tokens[idx, p])[None]  # (1, n, d)
            for ref in layers:
                seq = ref(seq)
            per_pos.append(seq[0])
        expected[idx] = head.classifier(torch.relu(head.fc[1](torch.stack(per_pos).mean(0))))
    assert_informative(expected, "reference encoder logits", min_len=2)
    assert_close(head(x), expected, rtol=1e-4, atol=1e-5)


def test_token_and_actor_permutations():
    for name, make in (("tonly", tonly_input), ("sonly", sonly_input)):
        x = make(seed=2)
        head = build_head(name, **KW, token_dim=5).eval()
        randomise(head, seed=2, std=0.2)
        out = head(x)
        # The same permutation of positions for every person: positions are independent
        # sequences with shared weights, averaged, so nothing changes.
        if name == "tonly":
            x.actor_temporal = x.actor_temporal[:, [2, 0, 1]]
        else:
            x.actor_roi = x.actor_roi.flatten(2)[:, :, [3, 1, 0, 2]].view_as(x.actor_roi)
        assert_close(head(x), out, rtol=1e-4, atol=1e-5)
        # Shifting one person's tokens against the others' changes its co-actors' outputs.
        if name == "tonly":
            x.actor_temporal[0] = x.actor_temporal[0, [1, 2, 0]]
        else:
            x.actor_roi[0] = x.actor_roi[0].flatten(1)[:, [1, 2, 3, 0]].view_as(x.actor_roi[0])
        assert not torch.allclose(head(x)[1], out[1])
        # Persons are a set: permuting actors permutes outputs.
        x = make(seed=2)
        perm = torch.tensor([6, 2, 0, 4, 1, 7, 3, 5])
        x.actor_kf = x.actor_kf[perm]
        if name == "tonly":
            x.actor_temporal = x.actor_temporal[perm]
        else:
            x.actor_roi = x.actor_roi[perm]
        assert_close(head(x), out[perm], rtol=1e-4, atol=1e-5)


def test_tonly_bank_window_bounds():
    head = build_head("tonly", **KW, token_dim=5).eval()
    randomise(head, seed=3, std=0.2)
    x = tonly_input(seed=3)
    q = rows_of(x, 0)
    out = head(x)[q]
    for kf in (2, 3):  # outside the window, another video
        x2 = tonly_input(seed=3)
        x2.actor_temporal[rows_of(x2, kf)] += 2.0
        assert_close(head(x2)[q], out)
    x2 = tonly_input(seed=3)
    x2.actor_temporal[rows_of(x2, 1)] += 2.0  # inside (exactly 30 s)
    assert not torch.allclose(head(x2)[q], out)
    # Without a bank, other keyframes never matter.
    nob = build_head("tonly", **KW, token_dim=5, bank_window=0.0).eval()
    randomise(nob, seed=3, std=0.2)
    assert_close(nob(x2)[q], nob(x)[q])


def test_only_query_keyframes_are_computed():
    """The bank's other keyframes serve as memory only: query rows match the all-query output,
    every other row is a zero placeholder."""
    for name, make in (("tonly", tonly_input), ("sonly", sonly_input)):
        head = build_head(name, **KW, token_dim=5).eval()
        randomise(head, seed=4, std=0.2)
        x = make(seed=4)
        full = head(x)
        x.is_query = x.actor_kf == 0
        out = head(x)
        assert_close(out[x.is_query], full[x.is_query])
        assert bool((out[~x.is_query] == 0).all())
