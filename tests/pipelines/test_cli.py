import pytest
from click.testing import CliRunner

from pipelines.cli import COMMANDS, load_command, main


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
    from extract.store import open_store

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
