"""`<command> --help` of every console command (and of each subcommand) imports no torch: help
answers at once, and nothing heavy loads before a command actually runs (issue 32, item 9).
Each command runs in a fresh interpreter, which then reports whether torch was imported."""
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]

_PROBE = """
import sys
from importlib import import_module
module, attr = sys.argv[1].split(":")
entry = getattr(import_module(module), attr)
sys.argv = [sys.argv[2], *sys.argv[3:], "--help"]
try:
    entry()
except SystemExit as e:
    assert e.code in (0, None), e.code
heavy = sorted(m for m in ("torch", "torchvision", "pytorchvideo", "transformers", "matplotlib") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def _subcommands(name: str) -> list[list[str]]:
    import click

    from stagecache.pipelines.commands.cli import load_command

    if name == "stagecache":
        return [[]]
    cmd = load_command(name)
    return [[]] + ([[sub] for sub in sorted(cmd.commands)] if isinstance(cmd, click.Group) else [])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_of_every_command_imports_no_torch(name):
    for sub in _subcommands(name):
        r = subprocess.run([sys.executable, "-c", _PROBE, SCRIPTS[name], name, *sub], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "Usage:" in r.stdout, r.stdout[-500:]
        heavy = r.stdout.rsplit("HEAVY:", 1)[1].strip()
        assert heavy == "", f"`{name} {' '.join(sub)} --help` imported {heavy}"
