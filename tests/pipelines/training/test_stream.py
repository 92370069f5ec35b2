"""The streamed split source (pipelines/training/stream.py) against the resident one."""
import numpy as np
import pytest
import torch

from stagecache.extract.store import compact, open_store
from stagecache.heads import HEADS, build_head
from stagecache.extract.synthetic import LABEL_IDS
from stagecache.pipelines.training import losses
from stagecache.pipelines.training.sources import PreflightError, SplitSize, choose_sources, parse_size
from stagecache.pipelines.training.split_batches import epoch_batches
from stagecache.pipelines.training.split_read import KEEP_IN_TABLES
from stagecache.pipelines.training.steps import LossContext, SplitContext, make_optimizer, train_epoch
from stagecache.pipelines.training.stream import GroupedBatches
from tests.pipelines.training.stream_helpers import (ACAR_ARGS, ACTOR_DIM, OBJECT_DIM, largest_video_bytes,
                                                     level_store, multi_fragment_store, plan_of, same_batch, splits)

# Small heads: quick, and deterministic on CPU (the default ACAR's convolutions are not: two
# identical resident runs already differ in the last bit).
TRANSFORMER = {"d_model": 16, "nhead": 2, "dim_feedforward": 16}
SMALL = {"acar": ACAR_ARGS, "acar_rn": ACAR_ARGS, "acrn": {"relation_dim": 4, "out_dim": 4},
         "stage": {"num_layers": 1, "num_heads": 2}, "igmn": {"hidden_dim": 16, "num_layers": 1, "mem_reduce_dim": 8},
         "sto": {"hidden_dim": 16, "num_layers": 1}, "lfb": {"hidden_dim": 16, "num_layers": 1},
         "tonly": TRANSFORMER, "sonly": TRANSFORMER}
CASES = [(name, SMALL.get(name, {}), "") for name in sorted(HEADS)] + [("acar", ACAR_ARGS | {"bank": True}, "acfb")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return level_store(tmp_path_factory.mktemp("lv") / "s.zarr")


def _head(name, kw, seed=0):
    torch.manual_seed(seed)
    return build_head(name, actor_dim=ACTOR_DIM, object_dim=OBJECT_DIM, num_classes=len(LABEL_IDS), **kw)


@pytest.mark.parametrize("name,kw,bank", CASES, ids=[c[0] + ("+bank" if c[2] else "") for c in CASES])
def test_streamed_batches_losses_and_weights_equal_resident_under_blocks(store, name, kw, bank):
    head = _head(name, kw)
    budget = 4 * largest_video_bytes(store, plan_of(head, store, bank_group=bank))  # chunks of ~2 videos
    res, stm = splits(store, head, budget=budget, bank_group=bank)
    assert (res.source.kind, stm.source.kind) == ("resident", "streamed")
    assert stm.graph.actor_feat.shape[1] == 0  # the streamed graph holds no features
    # No split held twice: once the graph holds the features, the tables keep only validation's arrays.
    assert set(res.tables.data) <= set(KEEP_IN_TABLES) and set(stm.tables.data) <= set(KEEP_IN_TABLES)
    radius = float(head.temporal_radius)
    queries = res.graph.query_keyframes()
    assert torch.equal(queries, stm.graph.query_keyframes())
    batches = epoch_batches(queries, 6, "blocks", 3, 1)
    for a, b in zip(res.source.batches(batches, radius, actor_labels=True),
                    stm.source.batches(batches, radius, actor_labels=True), strict=True):
        same_batch(a, b)
    assert stm.source.chunks_read > 1  # several chunks, each read once
    # One epoch of optimisation from the same weights: equal losses and weights, bit for bit.
    loss = LossContext("bce", losses.pose_columns(LABEL_IDS, []))
    states = []
    for split in (res, stm):
        h = _head(name, kw)
        opt = make_optimizer(h.parameters(), 1e-3, 0.0, torch.device("cpu"))
        stats = train_epoch(h, opt, SplitContext.of(split, radius, torch.device("cpu")), loss, batches[:4])
        states.append((stats["train_loss"], h.state_dict()))
    assert states[0][0] == states[1][0]
    for k, v in states[0][1].items():
        assert torch.equal(v, states[1][1][k]), k


def test_streamed_source_never_holds_more_than_its_budget(store):
    head = _head("tonly", {})  # radius 30 s: a batch's window is its whole video
    plan = plan_of(head, store)
    budget = int(4.5 * largest_video_bytes(store, plan))
    _, stm = splits(store, head, budget=budget)
    src = stm.source
    batches = epoch_batches(stm.graph.query_keyframes(), 4, "blocks", 0, 0)
    assert sum(1 for _ in src.batches(batches, 30.0)) == len(batches)
    assert 0 < src.peak <= budget and src.live == 0  # every chunk's buffers accounted and released
    assert src.chunks_read >= 3


def test_random_sampling_streamed_groups_videos_within_a_chunk(store):
    head = _head("stage", {})
    budget = 4 * largest_video_bytes(store, plan_of(head, store))
    _, stm = splits(store, head, budget=budget)
    src, g = stm.source, stm.graph
    queries = g.query_keyframes()
    a = src.epoch_batches(queries, 5, "random", 7, 2)
    assert isinstance(a, GroupedBatches) and len(a.starts) > 1
    assert sorted(torch.cat(list(a)).tolist()) == queries.tolist()  # every query once
    assert [b.tolist() for b in a] == [b.tolist() for b in src.epoch_batches(queries, 5, "random", 7, 2)]
    assert [b.tolist() for b in a] != [b.tolist() for b in src.epoch_batches(queries, 5, "random", 7, 3)]
    # A group's batches come from its videos only, and the group fits a chunk: read once.
    bounds = sorted(a.starts) + [len(a)]
    kfb = src.kf_bytes
    for s, e in zip(bounds[:-1], bounds[1:]):
        vids = set(g.kf_video[torch.cat(list(a[s:e]))].tolist())
        kf = torch.nonzero(torch.isin(g.kf_video, torch.tensor(sorted(vids)))).flatten().numpy()
        assert kfb[kf].sum() <= src.chunk_budget
    n = sum(1 for _ in src.batches(a, float(head.temporal_radius)))
    assert n == len(a) and src.chunks_read == len(a.starts)


def test_a_store_compacted_during_a_streamed_epoch_is_read_as_opened(tmp_path):
    path = multi_fragment_store(tmp_path / "m.zarr")
    head = _head("linear", {})
    budget = 2 * largest_video_bytes(path, plan_of(head, path))  # one video per chunk
    res, stm = splits(path, head, budget=budget)
    batches = epoch_batches(res.graph.query_keyframes(), 3, "blocks", 0, 0)
    it = stm.source.batches(batches, 0.0)
    got = [next(it)]
    before = set(p.name for p in (tmp_path / "m.zarr" / "fragments").iterdir())
    report = compact(path, log=lambda *a: None)
    after = set(p.name for p in (tmp_path / "m.zarr" / "fragments").iterdir())
    assert report["merged"] > 0 and not (before & after)  # every fragment read was replaced and deleted
    got += list(it)
    for a, b in zip(res.source.batches(batches, 0.0), got, strict=True):
        same_batch(a, b)


def test_a_budget_smaller_than_a_video_is_one_line_naming_it(store):
    head = _head("stage", {})
    st = open_store(store)
    from stagecache.pipelines.training.split_read import split_size
    from stagecache.pipelines.training.split import SplitSpec

    size = split_size(st, SplitSpec(store, "train", "gt", 0.9), plan_of(head, store))
    video, vbytes = size.largest_video()
    with pytest.raises(PreflightError) as e:
        choose_sources([size], size.small + vbytes, "--memory-budget", "streamed")
    msg = str(e.value)
    assert "\n" not in msg and video in msg and "train split" in msg and "--memory-budget" in msg
    with pytest.raises(PreflightError, match="resident needs .* --split-source streamed"):
        choose_sources([size], size.resident - 1, "--memory-budget", "resident")
    [auto] = choose_sources([size], size.resident, "--memory-budget", "auto")
    assert auto.kind == "resident"


def test_parse_size():
    assert parse_size("4G") == 4 << 30 and parse_size("512M") == 512 << 20 and parse_size("1.5GiB") == 3 << 29
    assert parse_size("1000") == 1000
    for bad in ("", "4X", "-1G", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_budget_choice_orders_splits_smallest_first():
    mk = lambda label, res, small, v: SplitSize(label, res, small, np.array([v]), ["v"])  # noqa: E731
    big, small = mk("train", 1000, 10, 50), mk("val", 100, 5, 20)
    a, b = choose_sources([big, small], 400, "test")
    assert (a.kind, b.kind) == ("streamed", "resident") and a.budget == 400 - 100 - 10
    assert "train: streamed (resident would need" in a.why and "val: resident" in b.why
    # The val split stays resident only if the train split can still stream (10 + 4 * 50 bytes).
    a, b = choose_sources([big, small], 310, "test")
    assert (a.kind, b.kind) == ("streamed", "resident") and a.budget == 200
    a, b = choose_sources([big, small], 500, "test", "streamed")
    assert a.budget == b.budget == (500 - 15) // 2 and "forced" in a.why
    with pytest.raises(PreflightError, match="train: streaming needs at least 210 B .* video v, 50 B.* leaves it 10"):
        choose_sources([big, small], 200, "test")


def test_cache_info_gives_each_heads_split_size(store):
    from stagecache.pipelines.tools.cache import format_info, store_info

    info = store_info(store)
    mem = info["memory"]
    assert set(mem) == set(HEADS)  # the store holds every level
    assert mem["stage"]["resident"] > mem["linear"]["resident"]  # + object features
    assert mem["sonly"]["resident"] > mem["linear"]["resident"]  # + actor_roi
    for m in mem.values():
        assert 0 < m["streamed_min"]
    assert "in memory as a split, per head" in format_info(info)
