"""Every command's options are generated from its argument dataclass (pipelines/commands/options.py).
Here: the generator itself (each metadata kind makes the right click option, a bad declaration is
refused), and every command against its dataclass: each option fills a field, each field has an
option or says why not, the options' defaults are the fields', the defaults (plus the required
values) build a valid dataclass, and where a command hands its arguments to a function or a
second dataclass, their defaults agree. A new command without a generated dataclass fails."""
from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click
import pytest
from click.testing import CliRunner

from stagecache.pipelines.commands.cli import COMMANDS, load_command
from stagecache.pipelines.commands.options import Command, dataclass_options, field_default


def _leaves() -> dict[str, click.Command]:
    out = {}
    for name in COMMANDS:
        cmd = load_command(name)
        if isinstance(cmd, click.Group):
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
        else:
            out[name] = cmd
    return out


LEAVES = _leaves()


def _file(tmp_path: Path, name: str, text: str = "") -> str:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return str(p)


def _dir(tmp_path: Path, name: str) -> str:
    p = tmp_path / name
    p.mkdir(parents=True, exist_ok=True)
    return str(p)


# What makes a command's defaults a valid combination beyond its required options (each of which
# gets a dummy value click accepts): files that must exist, one of two alternative inputs, ...
REQUIRED: dict[str, Callable[[Path], dict]] = {
    "ablate": lambda t: {"out": str(t / "o"), "heads": ["linear"]},
    "extract detections": lambda t: {"out_dir": str(t / "out"), "timestamps": "902:903"},
    "extract features": lambda t: {"split": "train", "label_map": _file(t, "lm.pbtxt"),
                                   "annotations": _file(t, "train.csv"), "random_init": True},
    "predict-video": lambda t: {"run_dir": str(Path(_file(t, "run/best.pt")).parent), "out_dir": str(t / "out"),
                                "proposals": _file(t, "p.csv")},
    "visualize": lambda t: {"timestamp": 902.0, "predictions": _file(t, "p.csv"), "video_name": "v"},
}


@dataclass
class Fills:
    """A function or dataclass a command hands its arguments to: its defaults must be the command's.
    renamed: command field -> (target name, conversion of the command's value); by_name: fields of
    the same name fill it too; differs: command field -> why its default is deliberately another."""

    target: object
    renamed: dict[str, tuple[str, Callable | None]] = field(default_factory=dict)
    by_name: bool = True
    differs: dict[str, str] = field(default_factory=dict)


def _fills() -> dict[str, list[Fills]]:
    from stagecache.extract.store import compact
    from stagecache.extract.tracking import write_tracks
    from stagecache.pipelines.evaluation.ava import EvaluateArgs
    from stagecache.pipelines.evaluation.tubes import TubeEvalArgs
    from stagecache.pipelines.tools.cache import export_h5, import_h5, verify_store
    from stagecache.pipelines.training.acfb import write_relation_bank
    from stagecache.pipelines.training.balanced import retrain_classifier_balanced

    progress = "the CLI shows progress bars unless told (--no-progress); the library default is quiet"
    return {
        "cache compact": [Fills(compact, {"target_mb": ("target_bytes", lambda v: v << 20),
                                          "stale_minutes": ("stale_seconds", lambda v: v * 60)})],
        "cache export": [Fills(export_h5)],
        "cache import": [Fills(import_h5, {"detected": ("boxes_are_gt", lambda v: not v)},
                               differs={"progress": progress})],
        "cache verify": [Fills(verify_store)],
        "evaluate": [Fills(EvaluateArgs, {"pred": ("pred", None)}),
                     Fills(TubeEvalArgs, {"pred": ("preds", None), "tube_splits": ("splits", None)})],
        "extract tracks": [Fills(write_tracks)],
        "train-head": [Fills(retrain_classifier_balanced, {"retrain_epochs": ("epochs", None)}, by_name=False)],
        "write-bank": [Fills(write_relation_bank, differs={"progress": progress})],
    }


def _args_class(cmd: click.Command):
    return getattr(cmd.callback, "args_dataclass", None)


def _dummy(param: click.Parameter, tmp_path: Path) -> str:
    """A value a required parameter accepts, so that the command's defaults can be parsed."""
    t = param.type
    if isinstance(t, click.Path):
        return _dir(tmp_path, f"d_{param.name}") if not t.file_okay else _file(tmp_path, f"f_{param.name}")
    if isinstance(t, click.Choice):
        return str(t.choices[0])
    return "1" if isinstance(t, (click.types.IntParamType, click.types.FloatParamType)) else "x"


def _as_field(cls, name: str, value):
    """A repeated KEY=VALUE option's pairs reach the command as given (train-head types them by the
    head): as a dict, for the field."""
    if typing.get_type_hints(cls)[name] is dict and isinstance(value, tuple):
        return dict(pair.split("=", 1) for pair in value)
    return value


def _parsed(path: str, cmd: click.Command, tmp_path: Path) -> dict:
    """What the command body receives when the user gives only the required parameters (dummies):
    parsed by click itself, so callbacks and repeatable options are included."""
    argv = []
    for p in cmd.params:
        if p.required:
            argv += ([] if isinstance(p, click.Argument) else [p.opts[0]]) + [_dummy(p, tmp_path)]
    return dict(cmd.make_context(path, argv).params)


def _target_defaults(target) -> dict:
    if dataclasses.is_dataclass(target):
        return {f.name: field_default(f) for f in dataclasses.fields(target)}
    return {n: (dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default)
            for n, p in inspect.signature(target).parameters.items()}


def test_every_command_is_generated_from_its_argument_dataclass():
    missing = sorted(path for path, cmd in LEAVES.items() if not dataclasses.is_dataclass(_args_class(cmd)))
    assert not missing, f"commands whose options are not generated from a dataclass: {missing}"
    assert set(_fills()) <= set(LEAVES)


@pytest.mark.parametrize("path", sorted(LEAVES))
def test_every_option_fills_a_field_with_the_fields_default(path, tmp_path):
    cmd = LEAVES[path]
    cls = _args_class(cmd)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = [p.name for p in cmd.params]
    assert len(names) == len(set(names)), f"{path}: two options fill one field"
    stray = sorted(set(names) - set(fields))
    assert not stray, f"{path}: options {stray} fill no field of {cls.__name__}"
    without = sorted(set(fields) - set(names) - {n for n, f in fields.items() if f.metadata.get("no_option")})
    assert not without, f"{path}: {cls.__name__} fields without an option or a 'no_option' reason: {without}"
    values = _parsed(path, cmd, tmp_path)
    for p in cmd.params:
        if p.required:
            continue
        got, want = _as_field(cls, p.name, values[p.name]), field_default(fields[p.name])
        assert got == want, f"{path} {p.opts[0]}: default {got!r}, {cls.__name__}.{p.name}: {want!r}"


@pytest.mark.parametrize("path", sorted(LEAVES))
def test_the_dataclass_accepts_the_cli_defaults(path, tmp_path):
    """The command run with every option left at its default (and the required values) builds a
    valid dataclass, so no default is one that `__post_init__` refuses."""
    cmd = LEAVES[path]
    cls = _args_class(cmd)
    kw = {k: _as_field(cls, k, v) for k, v in _parsed(path, cmd, tmp_path).items()}
    kw.update(REQUIRED.get(path, lambda t: {})(tmp_path))
    cls(**kw)  # raises ValueError on a refused default


@pytest.mark.parametrize("path", sorted(_fills()))
def test_what_a_command_hands_on_has_the_commands_defaults(path, tmp_path):
    cls = _args_class(LEAVES[path])
    defaults = {f.name: field_default(f) for f in dataclasses.fields(cls)}
    for fill in _fills()[path]:
        target = _target_defaults(fill.target)
        matched = 0
        for name, value in defaults.items():
            tname, conv = fill.renamed.get(name, (name, None))
            if (name not in fill.renamed and not fill.by_name) or tname not in target or name in fill.differs:
                continue
            matched += 1
            if value is dataclasses.MISSING or target[tname] is dataclasses.MISSING:
                continue  # a required value has no default to agree on
            got = value if conv is None else conv(value)
            assert got == target[tname], \
                f"{path}: {cls.__name__}.{name} = {got!r}, {getattr(fill.target, '__name__', fill.target)}.{tname} = {target[tname]!r}"
        assert matched, f"{path}: nothing of {cls.__name__} fills {fill.target}"
        assert not (set(fill.renamed) | set(fill.differs)) - set(defaults), f"{path}: stale entries"


def test_the_options_keep_their_documented_spellings(tmp_path):
    """Spellings that are not `--<field>`: inverted flags, other names, comma-separated ids,
    repeated KEY=VALUE pairs, and what the command does with them."""
    ctx = LEAVES["train-head"].make_context("train-head", [
        "--train-store", "a", "--val-store", "b", "--out", "o", "--backbone", "x", "--backbone", "y",
        "--head-arg", "num_layers=3", "--pose-ids", "1, 2", "--eval-ids", "3", "--no-cap", "--no-amp",
        "--no-progress", "--retrain-classifier", "balanced", "--retrain-epochs", "2"])
    p = ctx.params
    assert (p["out_dir"], p["backbones"], p["head_args"], p["pose_ids"], p["eval_label_ids"]) == \
        ("o", ["x", "y"], ("num_layers=3",), [1, 2], [3])
    assert (p["max_dets_per_kf"], p["amp"], p["progress"], p["retrain_classifier"], p["retrain_epochs"]) == \
        (None, False, False, "balanced", 2)
    ctx = LEAVES["ablate"].make_context("ablate", [
        "--train-store", "a", "--val-store", "b", "--out", "o", "--head", "stage", "--head-arg", "proximity=false",
        "--grid", "num_heads=2,4", "--seeds", "0,1", "--train-arg", "val_boxes=gt", "--epochs", "3", "--no-progress"])
    p = ctx.params
    assert (p["heads"], p["head_args"], p["grid"], p["seeds"], p["train"], p["epochs"], p["progress"]) == \
        (["stage"], {"proximity": False}, {"num_heads": [2, 4]}, [0, 1], {"val_boxes": "gt"}, 3, False)
    from stagecache.pipelines.ablation.sweep import AblateArgs

    args = AblateArgs(**p)
    assert args.train == {"val_boxes": "gt", "epochs": 3}  # --epochs goes into every run's TrainArgs
    r = CliRunner().invoke(LEAVES["ablate"], ["--train-store", "a", "--val-store", "b", "--out", "o", "--seeds", "1,x"])
    assert r.exit_code == 2 and "expected comma-separated integers, got '1,x'" in r.output
    r = CliRunner().invoke(LEAVES["ablate"], ["--train-store", "a", "--val-store", "b", "--out", "o", "--grid", "x"])
    assert r.exit_code == 2 and "'--grid': expected KEY=V1,V2,..., got 'x'" in r.output
    ctx = LEAVES["cache import"].make_context("import", [_file(tmp_path, "s.h5"), "st", "--detected", "--no-progress",
                                                         "--object-classes", _file(tmp_path, "c.txt")])
    assert (ctx.params["detected"], ctx.params["progress"], ctx.params["object_names"]) == (True, False, str(tmp_path / "c.txt"))
    ctx = LEAVES["cache info"].make_context("info", ["st", "--json"])
    assert (ctx.params["store"], ctx.params["as_json"]) == ("st", True)
    ctx = LEAVES["write-bank"].make_context("write-bank", ["--run", "r", "--store", "a", "--store", "b", "--no-progress"])
    assert (ctx.params["run_dir"], ctx.params["stores"], ctx.params["progress"]) == ("r", ["a", "b"], False)
    ctx = LEAVES["extract tracks"].make_context("tracks", ["--store", "s", "--mixed"])
    assert ctx.params["separate_gt"] is False
    ctx = LEAVES["evaluate"].make_context("evaluate", [
        "--gt", _file(tmp_path, "gt.pkl"), "--pred", _file(tmp_path, "a.csv"), "--pred", _file(tmp_path, "b.csv"),
        "--dataset", "jhmdb", "--split", "1", "--split", "2", "--json", str(tmp_path / "r.json")])
    assert (ctx.params["pred"], ctx.params["tube_splits"], ctx.params["json_path"]) == \
        ((str(tmp_path / "a.csv"), str(tmp_path / "b.csv")), [1, 2], str(tmp_path / "r.json"))
    videos = _dir(tmp_path, "videos")
    ctx = LEAVES["extract features"].make_context("features", [
        "--split", "1", "--side", "train", "--videos", videos, "--save", "roi,context",
        "--backbone-args", '{"model_depth": 50}', "--no-roi-aligned", "--res5-dilation"])
    assert (ctx.params["save"], ctx.params["backbone_kwargs"], ctx.params["roi_aligned"], ctx.params["res5_dilation"]) == \
        (("roi", "context"), {"model_depth": 50}, False, True)
    for bad, message in ((["--save", "flow"], "unknown value(s) ['flow']; valid: roi, temporal, context"),
                         (["--backbone-args", "[1]"], "must be a JSON object"),
                         (["--sampling-args", "{"], "not JSON")):
        r = CliRunner().invoke(LEAVES["extract features"], ["--split", "t", "--videos", videos, *bad])
        assert r.exit_code == 2 and message in r.output, r.output


@pytest.mark.parametrize("path, only_tubes", [("extract features", ("--side", "--frame-stride", "--gt-jitter")),
                                              ("evaluate", ("--split", "--min-tube-length"))])
def test_dataset_specific_options_are_listed_after_the_common_ones(path, only_tubes):
    out = CliRunner().invoke(LEAVES[path], ["--help"]).output
    common, _, tubes = out.partition("JHMDB-21 / UCF101-24 options:")

    def listed(text: str) -> set[str]:
        return {line.split()[0] for line in text.splitlines() if line.startswith("  --")}

    assert {"--dataset", "--help"} <= listed(common) and "--fps" in listed(out), out
    assert set(only_tubes) <= listed(tubes) and not set(only_tubes) & listed(common), out


def test_the_demo_choices_are_its_demos():
    from stagecache.pipelines.tools.demo import DEMO_DATASETS, DEMOS

    assert tuple(DEMOS) == DEMO_DATASETS


# ----------------------------------------------------------------------------- the generator itself

def _upper(pairs):
    return {k.upper(): v for k, v in (p.split("=", 1) for p in pairs)}


@dataclass
class _Toy:
    src: str = field(metadata={"help": "Source.", "argument": True, "path": {"exists": True}})
    out_dir: str = field(metadata={"help": "Output.", "option": "--out"})
    n: int = field(default=3, metadata={"help": "Count.", "range": {"min": 1}})
    rate: float | None = field(default=None, metadata={"help": "Rate.", "show_default": "the file's"})
    quiet: bool = field(default=False, metadata={"help": "Quiet."})
    amp: bool = field(default=True, metadata={"help": "Autocast."})
    progress: bool = field(default=True, metadata={"help": "Hide bars.", "off": "--no-progress"})
    cap: int | None = field(default=50, metadata={"help": "Keep everything.", "off": "--no-cap"})
    names: list[str] = field(default_factory=list, metadata={"help": "Names.", "option": "--name"})
    ids: list[int] = field(default_factory=list, metadata={"help": "Ids.", "sep": ","})
    levels: tuple[str, ...] = field(default=("a",), metadata={"help": "Levels.", "sep": ",", "choices": ["a", "b"]})
    pairs: dict = field(default_factory=dict, metadata={"help": "Pairs.", "option": "--pair"})
    upper: dict = field(default_factory=dict, metadata={"help": "Upper pairs.", "metavar": "K=V", "parse": _upper})
    conf: dict = field(default_factory=dict, metadata={"help": "Config.", "json": True})
    kind: str = field(default="a", metadata={"help": "Kind.", "choices": ["a", "b"], "metavar": "KIND"})
    stride: int | None = field(default=None, metadata={"help": "Stride.", "group": "Special options"})
    command_line: str = field(default="", metadata={"no_option": "set by the command"})


def _toy_cmd(cls=_Toy, **kw):
    got = {}

    @click.command(cls=Command, context_settings={"show_default": True})
    @dataclass_options(cls, **kw)
    def cmd(**values):
        got.clear()
        got.update(values)

    return cmd, got


def test_each_metadata_kind_makes_its_option(tmp_path):
    src = _file(tmp_path, "src.txt")
    cmd, got = _toy_cmd()
    assert cmd.callback.args_dataclass is _Toy
    r = CliRunner().invoke(cmd, [src, "--out", "o"])
    assert r.exit_code == 0, r.output
    assert got == {"src": src, "out_dir": "o", "n": 3, "rate": None, "quiet": False, "amp": True, "progress": True,
                   "cap": 50, "names": [], "ids": [], "levels": ("a",), "pairs": (), "upper": {}, "conf": {},
                   "kind": "a", "stride": None}
    r = CliRunner().invoke(cmd, [src, "--out", "o", "--n", "5", "--rate", "0.5", "--quiet", "--no-amp", "--no-progress",
                                 "--no-cap", "--name", "x", "--name", "y", "--ids", "1, 2,", "--levels", "b,a",
                                 "--pair", "k=v", "--pair", "k=w", "--upper", "a=1", "--conf", '{"x": 1}',
                                 "--kind", "b", "--stride", "2"])
    assert r.exit_code == 0, r.output
    assert got == {"src": src, "out_dir": "o", "n": 5, "rate": 0.5, "quiet": True, "amp": False, "progress": False,
                   "cap": None, "names": ["x", "y"], "ids": [1, 2], "levels": ("b", "a"), "pairs": ("k=v", "k=w"),
                   "upper": {"A": "1"}, "conf": {"x": 1}, "kind": "b", "stride": 2}
    assert _Toy(**got).cap is None  # the values fill the dataclass as they are
    for bad, message in (([src, "--n", "5"], "Missing option '--out'"),
                         (["nope", "--out", "o"], "does not exist"),
                         ([src, "--out", "o", "--n", "0"], "x>=1"),
                         ([src, "--out", "o", "--kind", "c"], "'c' is not one of"),
                         ([src, "--out", "o", "--ids", "1,x"], "'--ids': expected comma-separated integers, got '1,x'"),
                         ([src, "--out", "o", "--levels", "a,c"], "'--levels': unknown value(s) ['c']; valid: a, b"),
                         ([src, "--out", "o", "--conf", "[]"], "'--conf': must be a JSON object"),
                         ([src, "--out", "o", "--upper", "x"], "'--upper'")):
        r = CliRunner().invoke(cmd, bad)
        assert r.exit_code == 2 and message in r.output, (bad, r.output)
    out = CliRunner().invoke(cmd, ["--help"]).output
    assert "Usage: cmd [OPTIONS] SRC" in out and "--command-line" not in out
    for text in ("Count.  [default: 3; x>=1]", "Rate.  [default: (the file's)]", "--amp / --no-amp", "--no-progress",
                 "--no-cap", "--out TEXT", "--name TEXT", "--pair KEY=VALUE", "--upper K=V", "--kind KIND",
                 "Levels.  [default: a]", "--conf TEXT", "[required]"):
        assert text in out, (text, out)
    common, _, special = out.partition("Special options:")
    assert "--stride" in special and "--stride" not in common and "--help" in common


def test_the_generator_refuses_what_it_cannot_make():
    @dataclass
    class NoHelp:
        x: int = 1

    @dataclass
    class Typo:
        x: int = field(default=1, metadata={"help": "X.", "choice": [1]})

    @dataclass
    class OffRequired:
        x: bool = field(metadata={"help": "X.", "off": "--no-x"})

    @dataclass
    class FullPairs:
        x: dict = field(default_factory=lambda: {"a": 1}, metadata={"help": "X."})

    @dataclass
    class Unsupported:
        x: set = field(default_factory=set, metadata={"help": "X."})

    with pytest.raises(TypeError, match="NoHelp.x: a generated option needs"):
        dataclass_options(NoHelp)
    with pytest.raises(TypeError, match=r"Typo.x: unknown metadata \['choice'\]; valid: .*choices"):
        dataclass_options(Typo)
    with pytest.raises(TypeError, match="OffRequired.x: an 'off' flag needs a default"):
        dataclass_options(OffRequired)
    with pytest.raises(TypeError, match="FullPairs.x: a KEY=VALUE option starts empty"):
        dataclass_options(FullPairs)
    with pytest.raises(TypeError, match="Unsupported.x: no click option"):
        dataclass_options(Unsupported)
    with pytest.raises(TypeError, match=r"_Toy has no field\(s\) \['nope'\]"):
        dataclass_options(_Toy, skip=("nope",))
    assert dataclass_options(NoHelp, skip=("x",))(lambda: None) is not None
