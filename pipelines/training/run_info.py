"""What a run directory says about where and how it ran, beside the options it was given: the
device and precision actually used, torch's thread count, the package version and the git commit
of the code (`environment`, config.json's `environment`), and the line `train-head` prints before
its first epoch (`start_line`).

`environment` is a property of the process, not of what the run computes: a resumed run may run on
another device, with another thread count or from a newer commit, so `RunDir.check_resume` does not
compare it (config.json then holds the resuming session's; train.log keeps each session's line).
"""
from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import torch

# the package's root: stagecache's rooms are the folders there (pyproject's package-dir)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def precision(device: torch.device, amp: bool, cpu_bf16: bool) -> str:
    """The autocast a training step runs under on `device`: `steps.step_loss`'s rule (--amp on CUDA,
    in the GPU's half type; --cpu-bf16 on CPU, bfloat16), else float32."""
    from stagecache.pipelines.training.steps import _cuda_half  # the GPU's type, asked where the step asks it

    if amp and device.type == "cuda":
        return f"amp ({str(_cuda_half()).removeprefix('torch.')} autocast)"
    if cpu_bf16 and device.type == "cpu":
        return "cpu_bf16 (bfloat16 autocast)"
    return "float32"


def package_version() -> str | None:
    try:
        return metadata.version("stagecache")
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PACKAGE_ROOT), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs: the run goes on without it
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the package runs from; (None, None) when it is not one (an
    installed wheel, no git): the checkout must be the package's own, not a repository around it."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != PACKAGE_ROOT:
        return None, None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def environment(device: torch.device, amp: bool, cpu_bf16: bool) -> dict:
    """config.json's `environment` (module docstring)."""
    commit, dirty = git_state()
    return {"device": str(device), "precision": precision(device, amp, cpu_bf16),
            "torch_threads": torch.get_num_threads(), "torch_version": str(torch.__version__),
            "package_version": package_version(), "git_commit": commit, "git_dirty": dirty}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def start_line(env: dict, train_graph, val_graph, head, groups: list[str], bank_group: str = "") -> str:
    """One line before the first epoch: device, split sizes (keyframes with a selected actor, actors),
    head size, and the feature groups and levels it reads (`head.requires`, heads/protocol.py)."""
    sizes = "; ".join(f"{role} {int(g.query_keyframes().numel())} keyframes / {int(g.actor_offset[-1])} actors"
                      for role, g in (("train", train_graph), ("val", val_graph)))
    levels = ["pooled", *sorted(head.requires)] + ([f"bank {bank_group}"] if bank_group else [])
    return (f"device {env['device']} ({env['precision']}, {env['torch_threads']} threads); {sizes}; "
            f"head {count_parameters(head):,} parameters; reads {' + '.join(groups)}: {', '.join(levels)}")
