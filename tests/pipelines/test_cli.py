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
