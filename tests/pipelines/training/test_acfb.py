import json

import numpy as np
import pytest
import torch

from stagecache.extract.store import StoreWriter, open_store
from stagecache.extract.synthetic import LABEL_IDS, LABEL_NAMES, OBJECT_CLASSES, video_arrays, video_name
from stagecache.heads.batch import HeadInput
from stagecache.pipelines.training.acfb import write_relation_bank
from stagecache.pipelines.training.predict import PredictArgs, predict
from stagecache.pipelines.training.run_dir import load_trained
from stagecache.pipelines.training.split import SplitSpec, load_split
from stagecache.pipelines.training.train import TrainArgs, train

ACTOR_DIM, CTX = 8, (8, 3, 3)
HEAD_ARGS = {"reduce_dim": 8, "hidden_dim": 4, "num_layers": 1}


def make_context_store(path, *, split, seed, n_videos, kfs, first_video=0):
    """A tiny store with a backbone group holding actor_pooled and kf_context (K, C, H, W)."""
    rng = np.random.default_rng(seed)
    with StoreWriter(str(path), split=split, label_ids=LABEL_IDS, label_names=LABEL_NAMES,
                     object_classes=OBJECT_CLASSES) as w:
        w.declare_group("base", {"source": "test"})
        w.declare_group("bb", {"backbone": "bb", "levels": ["pooled", "context"]})
        for i in range(first_video, first_video + n_videos):
            va = video_arrays(seed, split, i, kfs, actor_dim=ACTOR_DIM, object_dim=4)
            counts = dict(timestamps=va["timestamps"], actor_counts=va["actor_counts"],
                          object_counts=va["object_counts"])
            w.add_video("base", video_name(i), arrays=va["base"], **counts)
            ctx = rng.standard_normal((kfs,) + CTX).astype(np.float32)
            w.add_video("bb", video_name(i), arrays={"actor_pooled": va["pooled"], "kf_context": ctx}, **counts)
    return str(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctx")
    return (make_context_store(root / "train.zarr", split="train", seed=0, n_videos=2, kfs=8),
            make_context_store(root / "val.zarr", split="val", seed=1, n_videos=1, kfs=8, first_video=50))


def _args(stores, out, **kw):
    base = dict(train_store=stores[0], val_store=stores[1], head="acar", out_dir=str(out), epochs=1, batch_size=8,
                lr=1e-3, progress=False, val_score_threshold=0.5, early_stop=100, head_args=dict(HEAD_ARGS))
    return TrainArgs(**(base | kw))


@pytest.fixture(scope="module")
def stage_one(stores, tmp_path_factory):
    """(a) a bank-free acar run, (b) its bank written into both stores."""
    run = tmp_path_factory.mktemp("runs") / "acar"
    train(_args(stores, run))
    for s in stores:
        write_relation_bank(run, s, "acfb", boxes="gt+proposals", score_threshold=0.5, device="cpu")
    return run


def test_bank_round_trips_first_order_maps(stores, stage_one):
    head, cfg = load_trained(stage_one, torch.device("cpu"))
    for path in stores:
        t = open_store(path).load()
        maps = t.data["acfb/actor_maps"].float()  # (A_store, hidden, H, W)
        in_bank = t.data["acfb/actor_in_bank"].bool()
        assert maps.shape == (len(t.actor_kf), HEAD_ARGS["hidden_dim"]) + CTX[1:]
        want = t.data["base/actor_is_gt"].bool() | (t.data["base/actor_score"] >= 0.5)
        assert torch.equal(in_bank, want)
        assert torch.all(maps[~in_bank] == 0)
        # Reference: first_order_maps of one keyframe built straight from the raw store arrays.
        for kf in (0, len(t.kf_time) // 2, len(t.kf_time) - 1):
            lo, hi = int(t.kf_actor_offset[kf]), int(t.kf_actor_offset[kf + 1])
            n = hi - lo
            x = HeadInput(kf_video=t.kf_video[kf:kf + 1], kf_time=t.kf_time[kf:kf + 1].float(),
                          actor_feat=t.data["bb/actor_pooled"][lo:hi].float(),
                          actor_box=t.data["base/actor_box"][lo:hi], actor_kf=torch.zeros(n, dtype=torch.long),
                          is_query=torch.ones(n, dtype=torch.bool), object_feat=torch.zeros(0, 4),
                          object_box=torch.zeros(0, 4), object_kf=torch.zeros(0, dtype=torch.long),
                          object_class=torch.zeros(0, dtype=torch.long),
                          context=t.data["bb/kf_context"][kf:kf + 1].float())
            with torch.no_grad():
                ref = head.first_order_maps(x)
            sel = in_bank[lo:hi]
            assert sel.any()
            torch.testing.assert_close(maps[lo:hi][sel], ref[sel], rtol=2e-3, atol=2e-3)  # float16 storage


def test_write_bank_from_a_streamed_split_equals_the_resident_one(stores, stage_one, tmp_path):
    import shutil

    copy = tmp_path / "val.zarr"
    shutil.copytree(stores[1], copy)
    write_relation_bank(stage_one, str(copy), "acfb", boxes="gt+proposals", score_threshold=0.5, device="cpu",
                        split_source="streamed", memory_budget="1G")
    a = open_store(stores[1]).load({"acfb": None}).data  # written from a resident split (stage_one)
    b = open_store(str(copy)).load({"acfb": None}).data
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_batches_carry_the_stored_rows_of_their_actors(stores, stage_one):
    data = load_split(SplitSpec(stores[0], "train", "gt", 0.9), levels=["kf_context"], device=torch.device("cpu"),
                      bank_group="acfb")
    g = data.graph
    stored = open_store(stores[0]).load({"acfb": ["actor_maps"]}).data["acfb/actor_maps"]
    radius = 10.5  # the default 21 s bank window
    q = g.query_keyframes()[:2]
    x, rows = g.batch(q, radius)
    assert x.num_keyframes > len(q)  # the window brings keyframes around the queries
    assert torch.equal(x.extras["bank_maps"], stored[g.actor_row[rows]])
    assert torch.equal(x.extras["bank_kf"], x.actor_kf)


def test_bank_head_trains_and_predicts(stores, stage_one, tmp_path):
    run = tmp_path / "bank"
    summary = train(_args(stores, run, head_args=HEAD_ARGS | {"bank": True}, bank_group="acfb"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["bank_group"] == "acfb" and cfg["temporal_radius"] == 10.5
    assert np.isfinite(summary["best_val_map"])
    head, _ = load_trained(run, torch.device("cpu"))
    assert head.bank
    out = predict(PredictArgs(run_dir=str(run), store=stores[1], out=str(tmp_path / "p.csv"),
                              score_threshold=0.5, device="cpu"))
    assert out.exists() and out.stat().st_size > 0


def test_bank_misuse_is_refused(stores, stage_one, tmp_path):
    with pytest.raises(ValueError, match="needs --bank-group"):
        train(_args(stores, tmp_path / "a", head_args=HEAD_ARGS | {"bank": True}))
    with pytest.raises(ValueError, match="needs a head built with a bank"):
        train(_args(stores, tmp_path / "b", bank_group="acfb"))
    with pytest.raises(ValueError, match="write the bank first"):
        train(_args(stores, tmp_path / "c", head_args=HEAD_ARGS | {"bank": True}, bank_group="nobank"))
    # A bank written for GT boxes only cannot serve validation on proposals.
    write_relation_bank(stage_one, stores[1], "acfb_gt", boxes="gt", device="cpu")
    write_relation_bank(stage_one, stores[0], "acfb_gt", boxes="gt", device="cpu")
    with pytest.raises(ValueError, match="no entry in acfb_gt/actor_maps"):
        train(_args(stores, tmp_path / "d", head_args=HEAD_ARGS | {"bank": True}, bank_group="acfb_gt"))
    with pytest.raises(ValueError, match="no first_order_maps"):
        train(_args(stores, tmp_path / "lin", head="linear", head_args={}))
        write_relation_bank(tmp_path / "lin", stores[0], "x", device="cpu")


def test_write_bank_cli(stores, stage_one):
    from click.testing import CliRunner

    from stagecache.pipelines.commands.acfb import write_bank_cli

    res = CliRunner().invoke(write_bank_cli, ["--run", str(stage_one), "--store", stores[0], "--store", stores[1],
                                              "--group", "acfb_cli", "--score-threshold", "0.5", "--device", "cpu",
                                              "--no-progress"])
    assert res.exit_code == 0, res.output
    for s in stores:
        t = open_store(s).load({"acfb": ["actor_maps"], "acfb_cli": ["actor_maps"]})
        assert torch.equal(t.data["acfb/actor_maps"], t.data["acfb_cli/actor_maps"])  # same run, same maps
    res = CliRunner().invoke(write_bank_cli, ["--run", str(stage_one / "nope"), "--store", stores[0]])
    assert res.exit_code != 0 and "not found" in res.output
