import pytest
from click.testing import CliRunner

from stagecache.pipelines.commands.cli import COMMANDS, load_command, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_defaults(name):
    cmd = load_command(name)
    r = CliRunner().invoke(cmd, ["--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output and "--help" in r.output


def test_extract_has_features_and_detections():
    cmd = load_command("extract")
    assert {"features", "detections"} <= set(cmd.commands)
    r = CliRunner().invoke(cmd, ["features", "--help"])
    assert "--backbone" in r.output and "default:" in r.output


def test_umbrella_command_lists_everything_and_rejects_unknown():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for name in COMMANDS:
        assert name in r.output
    r = CliRunner().invoke(main, ["nope"])
    assert r.exit_code != 0 and "No such command" in r.output


def test_train_head_rejects_an_unknown_head_listing_valid_ones():
    r = CliRunner().invoke(load_command("train-head"), ["--head", "nope", "--train-store", "a", "--val-store", "b"])
    assert r.exit_code != 0 and "stage" in r.output and "linear" in r.output


def test_synth_store_with_levels_then_extract_tracks(tmp_path):
    from stagecache.extract.store import open_store

    path = str(tmp_path / "s.zarr")
    r = CliRunner().invoke(load_command("synth"), ["store", "--out", path, "--videos", "1", "--keyframes", "4",
                                                   "--actor-dim", "8", "--levels", "temporal,context"])
    assert r.exit_code == 0, r.output
    s = open_store(path)
    assert {"actor_temporal", "kf_context"} <= set(s.array_info("synthetic"))
    assert "actor_roi" not in s.array_info("synthetic")
    r = CliRunner().invoke(load_command("extract"), ["tracks", "--store", path])
    assert r.exit_code == 0, r.output
    track = open_store(path).load({"tracks": ["actor_track"], "base": ["actor_is_gt"]})
    ids = track.data["tracks/actor_track"]
    assert ids.shape[0] == s.num_actors and bool((ids >= 0).all())  # proposals get tracks too
    r = CliRunner().invoke(load_command("synth"), ["store", "--out", str(tmp_path / "t.zarr"), "--levels", "flow"])
    assert r.exit_code != 0 and "valid: roi, temporal, context" in r.output
    r = CliRunner().invoke(load_command("extract"), ["tracks", "--store", str(tmp_path / "none.zarr")])
    assert r.exit_code != 0 and "none.zarr" in r.output


# ----------------------------------------------------------------------------- the one error path

def _bad_gt(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("v,0902,0.1,0.1,0.5,0.5,1\nv,0903,0.1,abc,0.5,0.5,1\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("v,0902,0.1,0.1,0.5,0.5,1,0.9\n")
    return str(gt), str(pred)


def test_console_script_prints_one_error_line_and_exits_1(tmp_path):
    import os
    import shutil
    import subprocess

    gt, pred = _bad_gt(tmp_path)
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "evaluate"  # the venv's console script, PATH or not
    exe = str(beside) if beside.is_file() else shutil.which("evaluate")
    assert exe is not None, "the package's console scripts are not installed"
    env = {k: v for k, v in os.environ.items() if k != "STAGECACHE_DEBUG"}
    r = subprocess.run([exe, "--gt", gt, "--pred", pred], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [f"Error: {gt}:2: y1 (column 4) is not a number: 'abc'"]
    r = subprocess.run([exe, "--gt", gt, "--pred", pred], capture_output=True, text=True,
                       env={**env, "STAGECACHE_DEBUG": "1"}, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "AvaFormatError" in r.stderr


def test_debug_flag_and_umbrella_command_take_the_same_path(tmp_path, monkeypatch):
    from stagecache.core.errors import UserError

    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    gt, pred = _bad_gt(tmp_path)
    r = CliRunner().invoke(main, ["evaluate", "--gt", gt, "--pred", pred])
    assert r.exit_code == 1 and r.stderr == f"Error: {gt}:2: y1 (column 4) is not a number: 'abc'\n"
    r = CliRunner().invoke(main, ["evaluate", "--gt", gt, "--debug", "--pred", pred])
    assert isinstance(r.exception, UserError) and "abc" in str(r.exception)  # raised: the traceback shows


def _toy(exc):
    """A command that creates --out (and a file in it when asked) and then raises `exc`."""
    import click

    @click.command()
    @click.option("--out", required=True)
    @click.option("--write-file", is_flag=True)
    def toy(out, write_file):
        from pathlib import Path

        Path(out, "sub").mkdir(parents=True)
        if write_file:
            Path(out, "sub", "f.txt").write_text("x")
        raise exc
    return toy


def _run_toy(exc, argv, capsys):
    from stagecache.pipelines.commands.cli import run

    with pytest.raises(SystemExit) as e:
        run(_toy(exc), argv, prog_name="toy")
    return e.value.code, capsys.readouterr().err


def test_failed_command_removes_the_empty_directories_it_created(tmp_path, capsys, monkeypatch):
    from stagecache.core.errors import UserError

    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    out = tmp_path / "new" / "run"
    code, err = _run_toy(UserError("bad\ninput"), ["--out", str(out)], capsys)
    assert code == 1 and err == "Error: bad input\n"
    assert not (tmp_path / "new").exists()
    # a directory that existed before, or one the command put a file in, stays
    (tmp_path / "old").mkdir()
    code, _ = _run_toy(UserError("bad"), [f"--out={tmp_path / 'old' / 'run'}"], capsys)
    assert code == 1 and (tmp_path / "old").is_dir() and not (tmp_path / "old" / "run").exists()
    code, _ = _run_toy(UserError("bad"), ["--out", str(out), "--write-file"], capsys)
    assert code == 1 and (out / "sub" / "f.txt").read_text() == "x"


def test_a_bug_keeps_its_traceback_and_usage_errors_stay_clicks(tmp_path, capsys):
    from stagecache.pipelines.commands.cli import run

    out = tmp_path / "bug"
    with pytest.raises(ZeroDivisionError):  # not a UserError: propagates, so Python prints the traceback
        run(_toy(ZeroDivisionError("bug")), ["--out", str(out)], prog_name="toy")
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        run(_toy(ZeroDivisionError()), [], prog_name="toy")
    assert e.value.code == 2 and "Missing option '--out'" in capsys.readouterr().err


def test_train_head_bad_head_arg_fails_before_the_run_directory_exists(tmp_path, monkeypatch):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train-head", "--head", "stage", "--train-store", "a", "--val-store", "b",
                                  "--out", str(out), "--head-arg", "temporal=maybe"])
    assert r.exit_code == 1 and not out.exists()
    assert r.stderr == "Error: --head-arg temporal=maybe: head stage takes temporal as true/false/yes/no/1/0, got 'maybe'\n"


def test_generated_options_keep_the_documented_spellings(tmp_path):
    """Options made from the argument dataclasses (pipelines/commands/options.py) answer to the
    names the README and earlier releases use, and reach the dataclass field they name."""
    from stagecache.extract.detectors.job import DetectionsArgs

    d = tmp_path / "videos"
    d.mkdir()
    det = load_command("extract").commands["detections"]
    ctx = det.make_context("detections", ["--video-dir", str(d), "--out", "o", "--timestamps", "902:903",
                                          "--video", "a", "--video", "b", "--person-nms", "0.4",
                                          "--object-nms", "0.2", "--random-init"])
    assert (ctx.params["out_dir"], ctx.params["videos"]) == ("o", ("a", "b"))
    args = DetectionsArgs(**ctx.params)
    assert (args.person_nms_thresh, args.object_nms_thresh, args.random_init, args.person_max) == (0.4, 0.2, True, 50)
    ctx = load_command("demo").make_context("demo", ["--no-progress", "--videos", "2"])
    assert (ctx.params["progress"], ctx.params["videos"], ctx.params["device"]) == (False, 2, "auto")
    ctx = load_command("synth").commands["store"].make_context("store", ["--out", "s", "--keyframes", "4",
                                                                          "--no-proposals"])
    assert (ctx.params["path"], ctx.params["keyframes_per_video"], ctx.params["proposals"]) == ("s", 4, False)
    r = CliRunner().invoke(load_command("synth"), ["store", "--out", "s", "--videos", "0"])
    assert r.exit_code == 2 and "--videos" in r.output  # click's range check, as before
    ctx = load_command("predict").make_context("predict", ["--run", "r", "--store", "s", "--out", "p.csv"])
    assert (ctx.params["run_dir"], ctx.params["boxes"], ctx.params["batch_size"]) == ("r", "proposals", 64)


def test_visualize_with_a_missing_run_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    run, out = tmp_path / "norun", tmp_path / "o"
    r = CliRunner().invoke(main, ["visualize", "--run", str(run), "--store", str(tmp_path / "s.zarr"),
                                  "--out", str(out), "--timestamp", "902", "--video-name", "v"])
    assert r.exit_code == 1 and not out.exists()
    assert r.stderr == f"Error: {run / 'best.pt'} not found: is {run} a finished train-head run?\n"
