"""`WriteBankArgs`, the arguments of `write-bank` (pipelines/training/acfb.py, which re-exports them), in a
module that imports no torch, so that `write-bank --help` answers at once."""
from __future__ import annotations

from dataclasses import dataclass, field

from stagecache.core.boxes import BOX_SETS, check_box_set
from stagecache.pipelines.training.train_args import check_split_reading, memory_budget_field, split_source_field

DEFAULT_GROUP = "acfb"


@dataclass
class WriteBankArgs:
    """Arguments of `write-bank` (one `write_relation_bank` per store); each field's metadata is its
    CLI option (pipelines/commands/options.py)."""

    run_dir: str = field(metadata={"help": "Run directory of a bank-free acar head (train-head --head acar).",
                                   "option": "--run"})
    stores: list[str] = field(metadata={
        "help": "Feature store to write the bank into; repeat for the train and the val store.", "option": "--store"})
    group: str = field(default=DEFAULT_GROUP, metadata={
        "help": "Name of the derived store group (pass it to train-head --bank-group)."})
    boxes: str = field(default="gt+proposals", metadata={
        "help": "Actors whose first-order maps are stored (others get zeros and are refused by training).",
        "choices": BOX_SETS})
    score_threshold: float = field(default=0.8, metadata={"help": "Minimum proposal score of the stored actors."})
    checkpoint: str = field(default="best.pt", metadata={"help": "Checkpoint file in the run directory."})
    batch_size: int = field(default=64, metadata={"help": "Keyframes per forward pass."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    progress: bool = field(default=True, metadata={"help": "Hide progress bars.", "off": "--no-progress"})
    memory_budget: str = memory_budget_field()
    split_source: str = split_source_field()

    def __post_init__(self):
        self.stores = list(self.stores)
        if not self.stores:
            raise ValueError("give at least one store")
        check_box_set(self.boxes)
        if self.group == "base":
            raise ValueError("the bank cannot be written into the 'base' group")
        check_split_reading(self.memory_budget, self.split_source)
