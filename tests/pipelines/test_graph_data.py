import numpy as np
import pytest
import torch

from pipelines.graph_data import GraphData, ranges_to_indices, select_actors, window_bounds


def test_ranges_to_indices_matches_python():
    lo = torch.tensor([0, 5, 5, 9])
    hi = torch.tensor([3, 5, 7, 10])
    want = [i for a, b in zip(lo.tolist(), hi.tolist()) for i in range(a, b)]
    assert ranges_to_indices(lo, hi).tolist() == want
    assert ranges_to_indices(torch.tensor([2]), torch.tensor([2])).tolist() == []


def test_window_bounds_stay_in_video_and_radius():
    video = np.array([0, 0, 0, 0, 1, 1, 2])
    time = np.array([902.0, 903.0, 905.0, 906.0, 902.0, 903.0, 902.0])
    lo, hi = window_bounds(video, time, 1.0)
    for k in range(len(video)):
        want = [j for j in range(len(video)) if video[j] == video[k] and abs(time[j] - time[k]) <= 1.0 + 1e-6]
        assert list(range(lo[k], hi[k])) == want
    with pytest.raises(ValueError, match="sorted"):
        window_bounds(np.array([1, 0]), np.array([0.0, 0.0]), 1.0)


def _graph(rng, n_videos=3, n_kf=6):
    kf_video = np.repeat(np.arange(n_videos), n_kf)
    kf_time = np.tile(902.0 + np.arange(n_kf), n_videos)
    K = len(kf_video)
    ac = rng.integers(0, 4, size=K)
    oc = rng.integers(0, 3, size=K)
    A, O = int(ac.sum()), int(oc.sum())
    off = lambda c: torch.from_numpy(np.concatenate(([0], np.cumsum(c))))
    return GraphData(
        video_names=[f"v{i}" for i in range(n_videos)],
        kf_video=torch.from_numpy(kf_video), kf_time=torch.from_numpy(kf_time),
        actor_offset=off(ac), object_offset=off(oc),
        actor_feat=torch.randn(A, 5), actor_box=torch.rand(A, 4), actor_labels=torch.zeros(A, 3, dtype=torch.uint8),
        actor_score=torch.ones(A), actor_is_gt=torch.ones(A, dtype=torch.bool), actor_track=torch.arange(A),
        actor_row=torch.arange(A), object_feat=torch.randn(O, 2), object_box=torch.rand(O, 4),
        object_class=torch.zeros(O, dtype=torch.long),
    )


def test_batch_gathers_exactly_the_window():
    rng = np.random.default_rng(0)
    g = _graph(rng)
    akf = g.actor_kf()
    query = torch.tensor([1, 7, 17])
    x, rows = g.batch(query, radius=2.0)
    # The batch keyframes are every keyframe of the query's video within 2 s.
    want = sorted({j for q in query.tolist() for j in range(g.num_keyframes)
                   if g.kf_video[j] == g.kf_video[q] and abs(g.kf_time[j] - g.kf_time[q]) <= 2.0})
    kf_index = {int(k): i for i, k in enumerate(want)}
    assert x.num_keyframes == len(want)
    assert torch.equal(x.kf_time.double(), g.kf_time[want].to(torch.float64))
    # Actors are the selected rows of those keyframes, with local keyframe indices.
    want_rows = [a for a in range(g.num_actors) if int(akf[a]) in kf_index]
    assert rows.tolist() == want_rows
    assert x.actor_kf.tolist() == [kf_index[int(akf[a])] for a in want_rows]
    torch.testing.assert_close(x.actor_feat, g.actor_feat[want_rows])
    assert x.is_query.tolist() == [int(akf[a]) in query.tolist() for a in want_rows]
    assert x.num_objects == int(sum(g.object_offset[k + 1] - g.object_offset[k] for k in want))


def test_select_actors():
    is_gt = np.array([True, False, False, True])
    score = np.array([1.0, 0.95, 0.5, 1.0])
    assert select_actors(is_gt, score, boxes="gt", score_threshold=0.9).tolist() == [True, False, False, True]
    assert select_actors(is_gt, score, boxes="proposals", score_threshold=0.9).tolist() == [False, True, False, False]
    assert select_actors(is_gt, score, boxes="gt+proposals", score_threshold=0.9).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="valid"):
        select_actors(is_gt, score, boxes="all", score_threshold=0.9)
