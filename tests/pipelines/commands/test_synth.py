"""`synth` says what to run next, and the README's step-by-step recipe runs exactly that."""
import shlex
from pathlib import Path

from click.testing import CliRunner

from stagecache.pipelines.commands.cli import load_command

README = Path(__file__).resolve().parents[3] / "README.md"


def _printed_commands(output: str, first: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith(first)]


def test_synth_videos_prints_extract_commands_that_parse_and_are_the_readmes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(load_command("synth"), ["videos", "--out", "data", "--videos", "1", "--seconds", "5"])
    assert r.exit_code == 0, r.output
    cmds = _printed_commands(r.output, "extract features")
    assert [shlex.split(c)[shlex.split(c).index("--split") + 1] for c in cmds] == ["train", "val"]
    features = load_command("extract").commands["features"]
    for cmd in cmds:
        args = shlex.split(cmd)[2:]
        features.make_context("features", list(args))  # every option known, every file there
        for flag in ("--annotations", "--proposals", "--objects-file", "--object-classes", "--label-map"):
            assert (tmp_path / args[args.index(flag) + 1]).is_file(), flag
    assert "--excluded" in shlex.split(cmds[1]) and "--excluded" not in shlex.split(cmds[0])
    readme = README.read_text()
    assert "synth videos --out data --videos 3 --seconds 10" in readme
    for cmd in cmds:  # the README's recipe is what synth prints (the commands do not depend on --videos)
        assert cmd in readme, cmd


def test_synth_store_prints_a_val_store_and_a_run_that_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synth = load_command("synth")
    r = CliRunner().invoke(synth, ["store", "--out", "train.zarr", "--videos", "2", "--keyframes", "4",
                                   "--actor-dim", "16", "--object-dim", "8"])
    assert r.exit_code == 0, r.output
    (val_cmd,) = _printed_commands(r.output, "synth store")
    (train_cmd,) = _printed_commands(r.output, "train-head")
    assert "--actor-dim 16" in val_cmd and "--object-dim 8" in val_cmd  # a val store the head can read
    r = CliRunner().invoke(synth, shlex.split(val_cmd)[1:])
    assert r.exit_code == 0, r.output
    args = shlex.split(train_cmd)[1:] + ["--epochs", "1", "--no-progress", "--no-tensorboard", "--out", "run"]
    r = CliRunner().invoke(load_command("train-head"), args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "best.pt").is_file()
