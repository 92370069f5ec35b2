"""Console entry points. Each command lives in `pipelines/commands/<area>.py`, its options generated
from its argument dataclass (`options.py`); its logic in the module it names. Entry points import
only their own command so one area's optional dependency never breaks another. Every entry point
(and `stagecache <command>`) runs through `run`, the one error path: `core.errors.UserError` ->
`Error: <message>`, exit 1."""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path

import click

from stagecache.core.atomic import disk_full_error, is_disk_full
from stagecache.core.errors import UserError

# pytorchvideo/torchvision use torch.jit.script at import, which current torch flags as deprecated:
# noise for users, not something they can act on.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

# console name -> (module, click object)
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("stagecache.pipelines.commands.extract", "extract_cli"),
    "train-head": ("stagecache.pipelines.commands.train", "train_head_cli"),
    "predict": ("stagecache.pipelines.commands.train", "predict_cli"),
    "evaluate": ("stagecache.pipelines.commands.evaluate", "evaluate_cli"),
    "cache": ("stagecache.pipelines.commands.cache", "cache_cli"),
    "synth": ("stagecache.pipelines.commands.synth", "synth_cli"),
    "ablate": ("stagecache.pipelines.commands.ablate", "ablate_cli"),
    "demo": ("stagecache.pipelines.commands.demo", "demo_cli"),
    "visualize": ("stagecache.pipelines.commands.visualize", "visualize_cli"),
    "predict-video": ("stagecache.pipelines.commands.predict_video", "predict_video_cli"),
    "write-bank": ("stagecache.pipelines.commands.acfb", "write_bank_cli"),
}


def load_command(name: str) -> click.Command:
    module, attr = COMMANDS[name]
    cmd = getattr(importlib.import_module(module), attr)
    if name == "extract":
        # `extract detections` lives with the detectors' command module.
        det = importlib.import_module("stagecache.pipelines.commands.detections")
        if "detections" not in cmd.commands:
            cmd.add_command(det.detections_cmd, "detections")
    return cmd


def _pop_debug(argv: list[str]) -> tuple[bool, list[str]]:
    """`--debug` anywhere before a `--` (any command) or STAGECACHE_DEBUG=1: show tracebacks."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end] or os.environ.get("STAGECACHE_DEBUG", "") not in ("", "0")
    return debug, [a for i, a in enumerate(argv) if not (i < end and a == "--debug")]


def _new_dirs(argv: list[str]) -> list[Path]:
    """For each argument that could be an output path, the outermost directory that does not exist
    yet (a command given `--out runs/a/b` may create `runs/a`). Only these can be removed later."""
    out = []
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if not value or value.startswith("-") or "://" in value:
            continue
        p = Path(value).absolute()
        if p.exists() or p.is_symlink():
            continue
        while not p.parent.exists():
            p = p.parent
        out.append(p)
    return out


def _remove_if_empty(d: Path) -> None:
    """Remove the directory `d` (created by the failed command) if it holds no file at any depth."""
    if not d.is_dir() or d.is_symlink() or any(not p.is_dir() or p.is_symlink() for p in d.rglob("*")):
        return
    for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()
    d.rmdir()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def run(cmd: click.Command, args: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run a click command as a console entry point, with the one error path of every command:
    a `UserError` (bad input: the message names the file and line / store, group and array / video)
    prints `Error: <message>` as one line on stderr and exits 1; click's own usage errors are
    click's; any other exception is a bug and keeps its traceback. `--debug` or STAGECACHE_DEBUG=1
    shows the traceback of a `UserError` too. Whatever way the command fails, a directory it created
    that holds no file is removed. Always ends with SystemExit."""
    _guarded(lambda argv: click.Command.main(cmd, args=argv, prog_name=prog_name, standalone_mode=True), args)


def _guarded(call, args: list[str] | None) -> None:
    debug, argv = _pop_debug(list(sys.argv[1:] if args is None else args))
    created = _new_dirs(argv)
    failed = True
    try:
        call(argv)  # click's standalone mode ends with SystemExit, 0 on success
        failed = False
    except SystemExit as e:
        failed = e.code not in (0, None)
        raise
    except UserError as e:
        if debug:
            raise
        click.echo(f"Error: {_one_line(e)}", err=True)
        sys.exit(1)
    except (OSError, RuntimeError) as e:  # a full disk where no write path named the file: still one line
        if debug or not is_disk_full(e):
            raise
        click.echo(f"Error: {_one_line(disk_full_error(getattr(e, 'filename', None) or os.getcwd()))}", err=True)
        sys.exit(1)
    finally:
        if failed:
            for d in created:
                _remove_if_empty(d)
    sys.exit(0)


class _Lazy(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        return load_command(name) if name in COMMANDS else None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        # `stagecache <command>` takes the same error path as the command's own entry point
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        _guarded(lambda argv: super(_Lazy, self).main(argv, prog_name, complete_var, True, **extra), args)


main = _Lazy(name="stagecache", help="stagecache: extract frozen-backbone features once, train relation heads in "
             "minutes. Every command takes --debug (or STAGECACHE_DEBUG=1) to show the traceback of an error.")


def _entry(name: str):
    def entry():
        run(load_command(name), prog_name=name)

    entry.__name__ = name.replace("-", "_") + "_cli"
    return entry


extract_cli = _entry("extract")
train_head_cli = _entry("train-head")
predict_cli = _entry("predict")
evaluate_cli = _entry("evaluate")
cache_cli = _entry("cache")
synth_cli = _entry("synth")
ablate_cli = _entry("ablate")
demo_cli = _entry("demo")
visualize_cli = _entry("visualize")
predict_video_cli = _entry("predict-video")
write_bank_cli = _entry("write-bank")
