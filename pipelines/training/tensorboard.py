"""TensorBoard event files of a run, written into its run directory beside metrics.jsonl and
holding the same values (`tensorboard --logdir RUN` or `--logdir SWEEP/runs`).

Scalars per epoch (step = epoch): train/loss, val/mAP, train/lr, train/keyframes_per_s and the
seconds spent in data, steps, training and validation; at each new best epoch the per-class val
AP (`val_ap_at_best/<id> <name>`, step = that epoch). A resumed run opens its writer with
`purge_step=1` and logs again every committed epoch of its checkpoint (and the best epoch's
per-class AP): TensorBoard then hides every event of the killed run, so each curve has one point
per committed epoch, never a duplicate or one from an epoch the resumed run redid.
"""
from __future__ import annotations

from pathlib import Path

# metrics.jsonl key -> TensorBoard tag
SCALARS: dict[str, str] = {
    "train_loss": "train/loss",
    "val_map": "val/mAP",
    "lr": "train/lr",
    "train_keyframes_per_s": "train/keyframes_per_s",
    "data_seconds": "time/data_seconds",
    "step_seconds": "time/step_seconds",
    "train_seconds": "time/train_seconds",
    "val_seconds": "time/val_seconds",
}


def class_tag(class_id, name: str = "") -> str:
    """The tag of one class's AP; '/' in a class name would open a TensorBoard group."""
    return f"val_ap_at_best/{int(class_id)}" + (f" {name.replace('/', '-')}" if name else "")


class RunBoard:
    """The event files of one run directory (module docstring)."""

    def __init__(self, path: str | Path, history: list[dict], *, best_epoch: int = -1,
                 best_ap: dict | None = None, class_names: dict | None = None):
        from torch.utils.tensorboard import SummaryWriter  # tensorboard's import: only for a run that writes

        self.class_names = {int(k): v for k, v in (class_names or {}).items()}
        # A resumed run: purge_step=1 hides every earlier event, and the committed epochs are logged again.
        self.writer = SummaryWriter(str(path), purge_step=1 if history else None)
        for record in history:
            self.epoch(record, flush=False)
        if history and best_ap and 1 <= best_epoch <= len(history):
            self.best(best_epoch, best_ap)
        self.writer.flush()

    def epoch(self, record: dict, flush: bool = True) -> None:
        """One metrics.jsonl record (its "epoch" is the step)."""
        for key, tag in SCALARS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, float(record[key]), int(record["epoch"]))
        if flush:
            self.writer.flush()

    def best(self, epoch: int, per_class: dict) -> None:
        """The per-class AP of a new best epoch (class id -> AP; NaN/None for classes without GT are skipped)."""
        for k, ap in per_class.items():
            if ap is not None and ap == ap:
                self.writer.add_scalar(class_tag(k, self.class_names.get(int(k), "")), float(ap), int(epoch))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def write_hparams(run_dir: str | Path, hparams: dict, metrics: dict) -> None:
    """An hparams summary in a run directory (`ablate`: one per run, so a sweep compares in
    TensorBoard's HPARAMS view). Values other than bool/int/float/str are written as their str."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
    exp, ssi, sei = hparams_summary(clean, {k: float(v) for k, v in metrics.items()})
    with SummaryWriter(str(run_dir)) as w:  # the run's own directory: TensorBoard pairs it with its curves
        fw = w._get_file_writer()
        for s in (exp, ssi, sei):
            fw.add_summary(s)
        for k, v in metrics.items():
            w.add_scalar(k, float(v))
