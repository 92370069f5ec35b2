"""pipelines/training/preflight.py: head keywords typed by the head's signature, and both stores checked
before train() writes anything."""
import pytest

from stagecache.heads import HEADS, build_head
from stagecache.pipelines.training.preflight import (HeadArgError, PreflightError, check_head_kwargs,
                                 head_parameters, parse_head_args, preflight_train)
from stagecache.pipelines.training.split_load import NonFiniteError
from stagecache.pipelines.training.train import TrainArgs, train
from tests.pipelines.commands.bad_input_helpers import write_store


def test_every_head_builds_what_its_table_entry_names():
    from stagecache.heads import head_callables

    for name in HEADS:
        *_, cls = head_callables(name)  # the class, or the class a builder forwards to
        assert isinstance(build_head(name, actor_dim=8, object_dim=8, num_classes=2), cls), name
        assert {"actor_dim", "object_dim", "num_classes", "tokens"}.isdisjoint(head_parameters(name))
    assert "hr2o" in head_parameters("acar_rn") and "bank_window" in head_parameters("tonly")


@pytest.mark.parametrize("text,value", [("no", False), ("No", False), ("false", False), ("0", False),
                                        ("yes", True), ("TRUE", True), ("1", True)])
def test_booleans_are_parsed_strictly(text, value):
    assert parse_head_args("stage", [f"temporal={text}"]) == {"temporal": value}


def test_values_follow_the_signature_types():
    got = parse_head_args("stage", ["num_layers=3", "time_step=1", "dropout=0.25", "attention=gat"])
    assert got == {"num_layers": 3, "time_step": 1.0, "dropout": 0.25, "attention": "gat"}
    assert type(got["num_layers"]) is int and type(got["time_step"]) is float
    assert parse_head_args("acrn", ["context_dim=none"]) == {"context_dim": None}
    assert parse_head_args("acrn", ["context_dim=12"]) == {"context_dim": 12}
    # tonly's builder forwards **kw to the transformer head: its keywords are checked too
    assert parse_head_args("tonly", ["d_model=16", "bank_window=30"]) == {"d_model": 16, "bank_window": 30.0}


@pytest.mark.parametrize("pairs,match", [
    (["temporal=maybe"], r"temporal as true/false/yes/no/1/0, got 'maybe'"),
    (["temporal=2"], r"temporal as true/false"),
    (["num_layers=1.5"], r"num_layers as int, got '1.5'"),
    (["dropout=nan"], r"dropout as float"),
    (["nope=1"], r"head stage has no option 'nope'; its options: actor_actor, adjacency"),
    (["num_classes=3"], r"no option 'num_classes'"),
    (["temporal=1", "temporal=0"], r"given twice"),
    (["temporal"], r"expected KEY=VALUE"),
])
def test_bad_head_args_are_refused_naming_the_option(pairs, match):
    with pytest.raises(HeadArgError, match=match):
        parse_head_args("stage", pairs)


def test_typed_head_kwargs_of_presets_are_checked():
    check_head_kwargs("stage", {"num_layers": 1, "dropout": 1, "temporal": False})
    with pytest.raises(HeadArgError, match="temporal as bool, got 'no'"):
        check_head_kwargs("stage", {"temporal": "no"})
    with pytest.raises(HeadArgError, match="num_layers as int, got True"):
        check_head_kwargs("stage", {"num_layers": True})


# ----------------------------------------------------------------------------- stores

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("pf")
    return (write_store(d / "train.zarr", levels=("kf_context",)),
            write_store(d / "val.zarr", split="val", videos=("vc",), levels=("kf_context",)))


def _args(train_store, val_store, out, **kw):
    return TrainArgs(**(dict(train_store=train_store, val_store=val_store, head="linear", out_dir=str(out),
                             epochs=1, progress=False, val_score_threshold=0.5) | kw))


def test_good_stores_pass(good, tmp_path):
    preflight_train(_args(*good, tmp_path / "run"))
    preflight_train(_args(*good, tmp_path / "run", head="acrn", head_args={"relation_dim": 4, "out_dim": 4}))
    assert not (tmp_path / "run").exists()  # preflight writes nothing


def test_nan_features_are_found_as_train_loads_naming_store_group_array_and_video(good, tmp_path):
    """Preflight reads no feature array (that would read the store twice); train() finds NaN/Inf
    as it loads each split, before it writes anything."""
    bad = write_store(tmp_path / "nan.zarr", nan_at=("vb", "actor_pooled", 1))
    preflight_train(_args(bad, good[1], tmp_path / "run"))
    with pytest.raises(NonFiniteError) as e:
        train(_args(bad, good[1], tmp_path / "run"))
    msg = str(e.value)
    assert f"train store {bad}: group feat, array actor_pooled: 1 row(s) with NaN/Inf" in msg
    assert "row 5, video vb, timestamp 902" in msg  # vb starts at row 4; row 1 of vb is keyframe 902's proposal
    bad = write_store(tmp_path / "nanbox.zarr", split="val", videos=("vc",), nan_at=("vc", "actor_box", 0))
    with pytest.raises(NonFiniteError, match=r"val store .*nanbox.zarr: group base, array actor_box: 1 row"):
        train(_args(good[0], bad, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_dimension_mismatch_between_train_and_val(good, tmp_path):
    val = write_store(tmp_path / "v16.zarr", split="val", videos=("vc",), dim=16, levels=("kf_context",))
    with pytest.raises(PreflightError, match=r"feature dims differ: train store .*train.zarr group feat array "
                                             r"actor_pooled is \[8\], val store .*v16.zarr is \[16\]"):
        preflight_train(_args(good[0], val, tmp_path / "run"))


def test_a_level_the_head_requires_is_missing(good, tmp_path):
    plain = write_store(tmp_path / "plain.zarr")
    with pytest.raises(PreflightError, match=r"train store .*plain.zarr: group feat has no array kf_context, "
                                             r"which the head needs; extract it with --save context"):
        preflight_train(_args(plain, good[1], tmp_path / "run", head="acrn"))


def test_label_names_must_agree(good, tmp_path):
    other = write_store(tmp_path / "names.zarr", split="val", videos=("vc",), label_names=["stand", "sit", "run"],
                        levels=("kf_context",))
    with pytest.raises(PreflightError, match=r"different label_names"):
        preflight_train(_args(good[0], other, tmp_path / "run"))


def test_bank_group_and_bank_head_go_together(good, tmp_path):
    with pytest.raises(HeadArgError, match="--bank-group acfb needs a head built with a bank"):
        preflight_train(_args(*good, tmp_path / "run", bank_group="acfb"))
    with pytest.raises(HeadArgError, match="head acar with bank=true needs --bank-group"):
        preflight_train(_args(*good, tmp_path / "run", head="acar", head_args={"bank": True}))
    with pytest.raises(PreflightError, match=r"train store .*: no group acfb with array actor_maps"):
        preflight_train(_args(*good, tmp_path / "run", head="acar", head_args={"bank": True}, bank_group="acfb"))


def test_unknown_backbone_and_empty_selection(good, tmp_path):
    with pytest.raises(PreflightError, match=r"train store .*: no group 'sf' with array actor_pooled"):
        preflight_train(_args(*good, tmp_path / "run", backbones=["sf"]))
    with pytest.raises(PreflightError, match=r"val store .*: no actors with --val-boxes proposals and "
                                             r"--val-score-threshold 0.95 \(2 GT rows, 2 proposal rows\)"):
        preflight_train(_args(*good, tmp_path / "run", val_score_threshold=0.95))


def test_train_fails_before_creating_the_run_directory(good, tmp_path):
    bad = write_store(tmp_path / "nan.zarr", nan_at=("va", "actor_pooled", 0))
    with pytest.raises(NonFiniteError):
        train(_args(bad, good[1], tmp_path / "a" / "run"))
    assert not (tmp_path / "a").exists()
    with pytest.raises(HeadArgError, match="no option 'nope'"):
        train(_args(*good, tmp_path / "a" / "run", head_args={"nope": 1}))
    assert not (tmp_path / "a").exists()


def test_run_checkpoints_hold_only_tensors_and_plain_values(good, tmp_path):
    import torch

    train(_args(*good, tmp_path / "run"))
    for name in ("last.pt", "best.pt"):  # plain weights_only: not even numpy scalars are admitted
        ckpt = torch.load(tmp_path / "run" / name, weights_only=True)
        assert set(ckpt) >= {"model", "config"}


def test_predict_checks_the_store_against_the_run(good, tmp_path):
    from stagecache.pipelines.training.preflight import preflight_predict

    train(_args(*good, tmp_path / "run"))
    preflight_predict(str(tmp_path / "run"), "best.pt", good[1])
    with pytest.raises(PreflightError, match=r"last2.pt not found: is .* a finished train-head run"):
        preflight_predict(str(tmp_path / "run"), "last2.pt", good[1])
    other = write_store(tmp_path / "o.zarr", split="val", videos=("vc",), label_names=["a", "b", "c"])
    preflight_predict(str(tmp_path / "run"), "best.pt", other)  # same ids, other names: predictions still line up
    wide = write_store(tmp_path / "w.zarr", split="val", videos=("vc",), dim=4)
    with pytest.raises(PreflightError, match=r"predict store .*w.zarr: groups \['feat'\] give 4-d actor features"):
        preflight_predict(str(tmp_path / "run"), "best.pt", wide)


def test_predict_refuses_nan_features(good, tmp_path):
    from stagecache.pipelines.training.predict import PredictArgs, predict

    train(_args(*good, tmp_path / "run"))
    bad = write_store(tmp_path / "nan.zarr", split="val", videos=("vc",), nan_at=("vc", "actor_pooled", 3))
    out = tmp_path / "preds" / "p.csv"
    with pytest.raises(NonFiniteError, match=r"predict store .*nan.zarr: group feat, array actor_pooled: 1 row"):
        predict(PredictArgs(run_dir=str(tmp_path / "run"), store=bad, out=str(out), device="cpu"))
    assert not out.parent.exists()
