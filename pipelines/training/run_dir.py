"""A run directory, the files `train-head` (and class-balanced retraining) leave behind, and
loading a trained run back.

    config.json        everything the run was built from (TrainArgs, label ids, dims, levels, the
                       val exclusions, ...) and where it ran (`environment`: pipelines/training/run_info.py)
    train.log          the run's console lines (not its progress bars), appended across --resume
    metrics.jsonl      one record per finished epoch
    curves.png         train loss, val mAP and LR per epoch, rewritten after each epoch
    last.pt            the state to resume from (written last in an epoch: its commit point)
    best.pt            weights of the best validation epoch, with val_predictions.csv and
                       per_class_ap.json (AP and name per class id, group mAPs) of that epoch
    summary.json       best val mAP, its epoch and the epochs run, written when the run ends
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from stagecache.core.atomic import atomic_open, atomic_path, remove_stale_temps
from stagecache.extract import ava_io
from stagecache.core.errors import UserError
from stagecache.core.safe_pickle import torch_load
from stagecache.heads import build_head
from stagecache.pipelines.training.curves import CURVES_FILE, plot_curves
from stagecache.pipelines.training.run_eval import det_predictions
from stagecache.pipelines.training.tensorboard import RunBoard


# what a refused run checkpoint's message ends with: the project's own hold only tensors and plain values
RUN_CHECKPOINT_HINT = "train-head checkpoints hold only tensors and plain values, so this one was not written by it"


class RunExistsError(UserError, FileExistsError):
    """--out already holds a run and --resume was not given."""


def check_new_run(out_dir: str | Path, resume: bool) -> None:
    """--out is a directory (or not there yet) that holds a run only when --resume continues it."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"--out {out} exists and is not a directory")
    if (out / "last.pt").exists() and not resume:
        raise RunExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")


def atomic_save(obj, path: Path) -> None:
    """torch.save that leaves the old file or the whole new one (a kill mid-write loses nothing; a
    full disk is one line, `core.atomic.DiskFullError`, naming the path and the space needed)."""
    tensors = [x for x in torch.utils._pytree.tree_leaves(obj) if isinstance(x, torch.Tensor)]
    with atomic_path(path, needed=sum(t.nbytes for t in tensors) or None) as tmp:
        torch.save(obj, tmp)


def write_predictions_csv(path: Path, det: dict, tables) -> None:
    """AVA predictions CSV of flattened detections (run_eval.detections) of a split's `tables`."""
    ava_io.write_predictions(path, det_predictions(det, tables))


class RunDir:
    """The files of one run directory (module docstring), written in the order that makes a killed
    run resumable: best.pt and its predictions, then last.pt, then the epoch's metrics line."""

    def __init__(self, path: str | Path, *, tensorboard: bool = False, name: str = ""):
        self.path = Path(path)
        self.tensorboard = tensorboard  # event files beside metrics.jsonl (pipelines/training/tensorboard.py)
        self.board: RunBoard | None = None
        self.name = name  # the head: what the console lines and the curves' title start with
        self.history: list[dict] = []
        self.class_names: dict[int, str] = {}
        self._pending: list[str] | None = []  # lines said before start() (the checks come first); None after

    def say(self, msg: str, *, echo: bool = True) -> None:
        """A console line of the run (stderr, `[name] msg`), kept in train.log too."""
        line = f"[{self.name}] {msg}" if self.name else msg
        if echo:
            print(line, file=sys.stderr, flush=True)
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n"
        if self._pending is not None:
            self._pending.append(stamped)
            return
        with open(self.path / "train.log", "a") as f:
            f.write(stamped)

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    def load_last(self, device: torch.device) -> dict:
        """The state a resumed run continues from."""
        try:
            return torch_load(self.last, map_location=device, hint=RUN_CHECKPOINT_HINT)  # run dirs are shared
        except OSError as e:  # truncated (torch seeks past its end: [Errno 22]) or unreadable
            raise CheckpointError(f"{self.last}: unreadable, truncated or damaged ({e.strerror or e}); --resume cannot "
                                  "continue from it: restore it, or remove it to restart the run") from None

    def check_resume(self, config: dict) -> None:
        """A resumed run continues the run it finds only with the options that run was started with
        (else its result would be neither run's): one line naming what differs. `epochs` may grow,
        and how the run is watched (progress bar, device, command line) may change."""
        path = self.path / "config.json"
        if not path.exists():
            return
        try:
            before = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ResumeMismatchError(f"{path}: unreadable ({e}); cannot check that --resume continues the same run") from None
        # A key an older stagecache did not record is absent (None) there; the new options default to
        # None too, and the label names are checked against the stores on their own (split.py).
        differ = [k for k in sorted(set(before) | set(config))
                  if k not in _MAY_CHANGE_ON_RESUME and not (k in _RECORDED_SINCE_0_1 and k not in before)
                  and json.dumps(before.get(k), sort_keys=True) != json.dumps(config.get(k), sort_keys=True)]
        if differ:
            shown = ", ".join(f"{k}={before.get(k)!r} -> {config.get(k)!r}" for k in differ[:4])
            raise ResumeMismatchError(f"--resume {self.path}: that run was started with other options ({shown}"
                                      f"{', ...' if len(differ) > 4 else ''}); give the same options, or a new --out-dir")

    def start(self, config: dict, history: list[dict], *, best_epoch: int = -1, best_ap: dict | None = None,
              class_names: dict | None = None) -> None:
        """Write the config and the metrics of the epochs already done: metrics.jsonl (and the
        TensorBoard curves, with the best epoch's per-class AP) are rewritten from the checkpointed
        history so a resumed run never duplicates an epoch."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in ("last.pt", "best.pt"):  # temp files of a killed run's checkpoint writes
            remove_stale_temps(self.path, name)
        _write_text(self.path / "config.json", json.dumps(config, indent=2))
        _write_text(self.path / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        with open(self.path / "train.log", "a") as f:  # appended: a resumed run's lines follow the first's
            f.write("".join(self._pending or []))
        self._pending = None
        self.history = list(history)
        self.class_names = {int(k): str(v) for k, v in (class_names or {}).items()}
        if history:
            self._plot()
        if self.tensorboard:
            self.board = RunBoard(self.path, history, best_epoch=best_epoch, best_ap=best_ap, class_names=class_names)

    def save_best(self, model_state: dict, config: dict, epoch: int, result, det: dict, tables,
                  groups: dict[str, list[int]]) -> None:
        """The best epoch so far: its weights, val predictions and per-class AP (`result`, a frame_map result)."""
        atomic_save({"model": model_state, "config": config, "epoch": epoch}, self.path / "best.pt")
        write_predictions_csv(self.path / "val_predictions.csv", det, tables)
        ap = result.to_json(groups) | {"class_names": {str(k): self.class_names.get(int(k), "") for k in result.per_class}}
        _write_text(self.path / "per_class_ap.json", json.dumps(ap, indent=2))
        if self.board is not None:
            self.board.best(epoch, result.per_class)

    def end_epoch(self, last: dict, record: dict) -> None:
        """Commit an epoch: the resumable state, then its metrics line."""
        atomic_save(last, self.last)
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self.history.append(record)
        self._plot()
        if self.board is not None:
            self.board.epoch(record)

    def _plot(self) -> None:
        plot_curves(self.path / CURVES_FILE, self.history, title=f"{self.name}: {self.path.name}" if self.name else "")

    def finish(self, summary: dict) -> dict:
        _write_text(self.path / "summary.json", json.dumps(summary, indent=2))
        self.say(f"done: best val mAP {summary['best_val_map'] * 100:.2f} at epoch {summary['best_epoch']}, "
                 f"{summary['epochs']} epochs", echo=False)  # the command prints its own summary line
        if self.board is not None:
            self.board.close()
        return summary


def _write_text(path: Path, text: str) -> None:
    # a kill mid-write leaves the previous file whole (a reader or a resumed run never sees half)
    with atomic_open(path) as f:
        f.write(text)


# options that do not change what a run computes, or (epochs) extend it the way an uninterrupted run would
_MAY_CHANGE_ON_RESUME = frozenset({"tensorboard", "epochs", "resume", "progress", "command_line", "device", "out_dir",
                                   "retrain_classifier", "retrain_epochs",  # train-head's step after train()
                                   "environment",  # where this session runs (device, threads, commit): run_info.py
                                   # how the splits are read: blocks batches are equal either way, and random
                                   # ones record the streamed chunk size they depend on (train_stream_budget)
                                   "memory_budget", "split_source"})


# Recorded in config.json since runs of the previous release (0.1.0 before the issue 31/32 work):
# a run started before them resumes.
_RECORDED_SINCE_0_1 = frozenset({"label_names"})


class ResumeMismatchError(UserError, ValueError):
    """--resume onto a run directory started with other options."""


class CheckpointError(UserError, ValueError):
    """A run checkpoint that cannot be read (truncated, damaged) or does not fit its own config."""


class RunNotFoundError(UserError, FileNotFoundError):
    """--run names no finished train-head run (one line from the CLI: visualize, write-bank, ...)."""


def load_trained(run_dir: str | Path, device: torch.device, checkpoint: str = "best.pt"):
    """A trained head and its config from a run directory."""
    run = Path(run_dir)
    path = run / checkpoint
    if not path.exists():
        raise RunNotFoundError(f"{path} not found: is {run} a finished train-head run?")
    try:
        ckpt = torch_load(path, map_location=device, hint=RUN_CHECKPOINT_HINT)  # run dirs are shared
    except OSError as e:  # truncated (torch seeks past its end: [Errno 22]) or unreadable
        raise CheckpointError(f"{path}: unreadable, truncated or damaged ({e.strerror or e})") from None
    try:
        cfg = ckpt["config"]
        head = build_head(cfg["head"], actor_dim=cfg["actor_dim"], object_dim=cfg["object_dim"],
                          num_classes=len(cfg["label_ids"]), **cfg["head_args"]).to(device)
        head.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # another run's weights, an edited config
        why = " ".join(str(e).split("\n")[:2]).strip() or type(e).__name__
        raise CheckpointError(f"{path}: its weights do not fit the head its config describes ({type(e).__name__}: "
                              f"{why[:300]})") from None
    head.eval()
    return head, cfg
