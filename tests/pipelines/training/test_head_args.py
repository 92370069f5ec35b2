"""pipelines/training/head_args.py: head keywords typed by the head's signature."""
import pytest

from stagecache.heads import HEADS, build_head
from stagecache.pipelines.training.head_args import HeadArgError, check_head_kwargs, head_parameters, parse_head_args


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
