import numpy as np
import pytest
import torch

from stagecache.pipelines.training.split_batches import GraphData, ranges_to_indices, window_bounds


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


def test_epoch_batches_cover_every_query_once_in_blocks_of_consecutive_keyframes():
    from stagecache.pipelines.training.split_batches import epoch_batches

    queries = torch.tensor([0, 1, 2, 4, 5, 7, 8, 9, 10, 12, 13, 15, 16])
    pos = {int(k): i for i, k in enumerate(queries)}
    for epoch in range(4):
        batches = epoch_batches(queries, 4, "blocks", 3, epoch)
        assert sorted(torch.cat(batches).tolist()) == queries.tolist()
        assert all(len(b) <= 4 for b in batches) and sum(len(b) < 4 for b in batches) <= 1
        for b in batches:
            # Consecutive queries in keyframe order; at most one wrap from the last to the first.
            steps = [(pos[int(b[i + 1])] - pos[int(b[i])]) % len(queries) for i in range(len(b) - 1)]
            assert steps == [1] * (len(b) - 1), b
        # A function of (seed, epoch) only: what a resumed run recomputes.
        again = epoch_batches(queries, 4, "blocks", 3, epoch)
        assert [x.tolist() for x in again] == [x.tolist() for x in batches]
    firsts = {tuple(epoch_batches(queries, 4, "blocks", 3, e)[0].tolist()) for e in range(6)}
    assert len(firsts) > 1  # block boundaries and order move between epochs
    rand = epoch_batches(queries, 4, "random", 3, 0)
    assert sorted(torch.cat(rand).tolist()) == queries.tolist()
    with pytest.raises(ValueError, match="valid: blocks, random"):
        epoch_batches(queries, 4, "shuffle", 0, 0)


def test_block_batches_give_the_whole_video_output_for_their_queries():
    """A block of consecutive queries plus its context gives each query actor the logits it gets
    when the head sees every keyframe of the split (2 layers: radius 2 s)."""
    from stagecache.heads.stage import STAGEHead
    from stagecache.pipelines.training.split_batches import epoch_batches

    torch.manual_seed(0)
    g = _graph(np.random.default_rng(1), n_videos=3, n_kf=8)
    head = STAGEHead(5, 2, 3, num_layers=2, num_heads=2).eval()
    radius = head.temporal_radius
    with torch.no_grad():
        x_all, rows_all = g.batch(torch.arange(g.num_keyframes), radius)
        full = head(x_all)[torch.argsort(rows_all)]  # (A, L) by actor row
        seen = []
        for q in epoch_batches(g.query_keyframes(), 3, "blocks", 0, 1):
            b = g.training_batch(q, radius)
            assert torch.equal(b.query_pos, torch.nonzero(b.x.is_query).flatten())
            assert set(g.actor_kf()[b.rows[b.query_pos]].tolist()) == set(q.tolist())
            out = head(b.x)[b.query_pos]
            torch.testing.assert_close(out, full[b.rows[b.query_pos]], rtol=1e-5, atol=1e-6)
            seen += b.rows[b.query_pos].tolist()
    assert sorted(seen) == list(range(g.num_actors))


def _naive_batch(g, q, radius):
    """A batch built the obvious way, keyframe by keyframe in Python: the reference for the
    vectorised, chunked `training_batches`."""
    kfs = sorted({j for k in q for j in range(g.num_keyframes)
                  if g.kf_video[j] == g.kf_video[k] and abs(float(g.kf_time[j] - g.kf_time[k])) <= radius + 1e-6})
    rows, akf, orows, okf = [], [], [], []
    for i, k in enumerate(kfs):
        a = list(range(int(g.actor_offset[k]), int(g.actor_offset[k + 1])))
        o = list(range(int(g.object_offset[k]), int(g.object_offset[k + 1])))
        rows, akf, orows, okf = rows + a, akf + [i] * len(a), orows + o, okf + [i] * len(o)
    is_query = [kfs[i] in set(q) for i in akf]
    qpos = [p for p, yes in enumerate(is_query) if yes]
    return kfs, rows, akf, orows, okf, is_query, qpos


@pytest.mark.parametrize("chunk_bytes", [1, 5000, 1 << 30])  # a chunk per batch, a few, one
def test_training_batches_equal_batches_built_one_by_one(chunk_bytes):
    """Every batch of an epoch (random and block sampling), whatever the chunking, holds exactly
    the tensors of a batch built on its own: same keyframes, rows, local indices, features, labels."""
    from stagecache.pipelines.training.split_batches import epoch_batches

    rng = np.random.default_rng(2)
    g = _graph(rng, n_videos=3, n_kf=7)
    g.actor_labels = torch.from_numpy(rng.integers(0, 2, (g.num_actors, 3)).astype(np.uint8))
    g.actor_extras = {"bank_maps": torch.randn(g.num_actors, 2)}
    for sampling, radius in (("random", 1.0), ("blocks", 2.0), ("random", 0.0)):
        batches = epoch_batches(g.query_keyframes(), 4, sampling, 0, 1)
        out = list(g.training_batches(batches, radius, actor_labels=True, chunk_bytes=chunk_bytes))
        assert len(out) == len(batches)
        for q, b in zip(batches, out):
            kfs, rows, akf, orows, okf, is_query, qpos = _naive_batch(g, q.tolist(), radius)
            assert b.rows.tolist() == rows and b.x.actor_kf.tolist() == akf and b.x.object_kf.tolist() == okf
            assert b.x.is_query.tolist() == is_query and b.query_pos.tolist() == qpos
            assert torch.equal(b.x.kf_video, g.kf_video[kfs])
            assert torch.equal(b.x.kf_time, g.kf_time[kfs].float())
            assert torch.equal(b.x.actor_feat, g.actor_feat[rows]) and torch.equal(b.x.actor_box, g.actor_box[rows])
            assert torch.equal(b.x.actor_track, g.actor_track[rows])
            assert torch.equal(b.x.object_feat, g.object_feat[orows]) and torch.equal(b.x.object_box, g.object_box[orows])
            assert torch.equal(b.x.object_class, g.object_class[orows])
            assert torch.equal(b.target, g.actor_labels[[rows[p] for p in qpos]])
            assert torch.equal(b.actor_labels, g.actor_labels[rows])
            assert torch.equal(b.x.extras["bank_maps"], g.actor_extras["bank_maps"][rows])
            assert b.x.extras["bank_kf"].tolist() == akf
    assert list(g.training_batches([], 1.0)) == []


def _tables(rng, n_kf=5):
    from stagecache.extract.store.read import Tables

    ac = rng.integers(1, 4, size=n_kf)
    a = int(ac.sum())
    off = torch.from_numpy(np.concatenate(([0], np.cumsum(ac))))
    data = {"feat/actor_pooled": torch.randn(a, 6).half(), "base/actor_box": torch.rand(a, 4),
            "base/actor_labels": torch.randint(0, 2, (a, 3), dtype=torch.uint8), "base/actor_score": torch.rand(a),
            "base/actor_is_gt": torch.rand(a) < 0.5, "base/actor_track": torch.arange(a),
            "base/object_box": torch.zeros(0, 4), "base/object_class": torch.zeros(0, dtype=torch.long)}
    return Tables(video_names=["v"], kf_video=torch.zeros(n_kf, dtype=torch.long),
                  kf_time=902.0 + torch.arange(n_kf, dtype=torch.float64), kf_actor_offset=off,
                  kf_object_offset=torch.zeros(n_kf + 1, dtype=torch.long), data=data,
                  actor_kf=torch.repeat_interleave(torch.arange(n_kf), torch.from_numpy(ac)),
                  object_kf=torch.zeros(0, dtype=torch.long))


def test_build_graph_data_keeps_exactly_the_selected_rows():
    from stagecache.pipelines.training.split_batches import build_graph_data

    t = _tables(np.random.default_rng(1))
    sel = t.data["base/actor_is_gt"].numpy()
    assert 0 < sel.sum() < len(sel)
    g = build_graph_data(t, backbones=["feat"], combine="mean", select=sel)
    mask = torch.from_numpy(sel)
    assert torch.equal(g.actor_feat, t.data["feat/actor_pooled"][mask])  # boolean indexing as the reference
    for field, key in (("actor_box", "actor_box"), ("actor_labels", "actor_labels"), ("actor_score", "actor_score"),
                       ("actor_track", "actor_track")):
        assert torch.equal(getattr(g, field), t.data[f"base/{key}"][mask].to(getattr(g, field).dtype)), field
    assert g.actor_row.tolist() == np.flatnonzero(sel).tolist()
    counts = torch.bincount(t.actor_kf[mask], minlength=len(t.kf_time))
    assert g.actor_offset.tolist() == [0] + torch.cumsum(counts, 0).tolist()


def test_build_graph_data_of_every_row_shares_the_loaded_tensors():
    """Selecting every actor copies nothing: the split's tensors are the loaded ones."""
    from stagecache.pipelines.training.split_batches import build_graph_data

    t = _tables(np.random.default_rng(2))
    g = build_graph_data(t, backbones=["feat"], combine="mean", select=np.ones(len(t.actor_kf), bool))
    assert g.actor_feat.data_ptr() == t.data["feat/actor_pooled"].data_ptr()
    assert torch.equal(g.actor_box, t.data["base/actor_box"])
