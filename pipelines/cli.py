"""Console entry points. Each command's options live in `pipelines/commands/<area>.py`; its logic in
the module it names. Entry points import only their own command so one area's optional
dependency never breaks another."""
from __future__ import annotations

import importlib
import warnings

import click

# pytorchvideo/torchvision use torch.jit.script at import, which current torch flags as deprecated:
# noise for users, not something they can act on.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

# console name -> (module, click object)
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("pipelines.commands.extract", "extract_cli"),
    "train-head": ("pipelines.commands.train", "train_head_cli"),
    "predict": ("pipelines.commands.train", "predict_cli"),
    "evaluate": ("pipelines.commands.evaluate", "evaluate_cli"),
    "cache": ("pipelines.commands.cache", "cache_cli"),
    "synth": ("pipelines.commands.synth", "synth_cli"),
    "ablate": ("pipelines.commands.ablate", "ablate_cli"),
    "demo": ("pipelines.commands.demo", "demo_cli"),
    "visualize": ("pipelines.commands.visualize", "visualize_cli"),
    "predict-video": ("pipelines.commands.predict_video", "predict_video_cli"),
    "write-bank": ("pipelines.commands.acfb", "write_bank_cli"),
}


def load_command(name: str) -> click.Command:
    module, attr = COMMANDS[name]
    cmd = getattr(importlib.import_module(module), attr)
    if name == "extract":
        # `extract detections` lives with the detectors' command module.
        det = importlib.import_module("pipelines.commands.detections")
        if "detections" not in cmd.commands:
            cmd.add_command(det.detections_cmd, "detections")
    return cmd


class _Lazy(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        return load_command(name) if name in COMMANDS else None


main = _Lazy(name="stagecache", help="stagecache: extract frozen-backbone features once, train relation heads in minutes.")


def _entry(name: str):
    def run():
        load_command(name)(prog_name=name)

    run.__name__ = name.replace("-", "_") + "_cli"
    return run


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
