"""`PredictArgs`, the arguments of `predict` (pipelines/training/predict.py, which re-exports them), in a
module that imports no torch, so that `predict --help` answers at once."""
from __future__ import annotations

from dataclasses import dataclass, field

from stagecache.core.boxes import BOX_SETS, check_box_set
from stagecache.pipelines.training.train_args import check_split_reading, memory_budget_field, split_source_field


@dataclass
class PredictArgs:
    """Arguments of `predict`; each field's help is its CLI option's (pipelines/commands/options.py)."""

    run_dir: str = field(metadata={
        "help": "Run directory of train-head, or an official STAGE checkpoint file (.pth: stage variant=official).",
        "option": "--run"})
    store: str = field(metadata={"help": "Feature store to predict on."})
    out: str = field(metadata={"help": "Output AVA predictions CSV."})
    boxes: str = field(default="proposals", metadata={"help": "Actor boxes to predict on.", "choices": BOX_SETS})
    score_threshold: float = field(default=0.8, metadata={"help": "Minimum proposal score."})
    checkpoint: str = field(default="best.pt", metadata={"help": "Checkpoint file in the run directory."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    score: str = field(default="class", metadata={
        "help": "Score of a (box, class) row: the class probability as the head gives it (class; what train-head's "
                "val predictions hold), or times the proposal's detection score (product, as ACT / MOC tubelet "
                "scores combine box and class).", "choices": ["class", "product"]})
    batch_size: int = field(default=64, metadata={
        "help": "Keyframes per forward pass (stage variant=official links neighbouring batch positions: "
                "6 reproduces the official test.py).", "range": {"min": 1}})
    memory_budget: str = memory_budget_field()
    split_source: str = split_source_field()

    def __post_init__(self):
        check_box_set(self.boxes)
        check_split_reading(self.memory_budget, self.split_source)
