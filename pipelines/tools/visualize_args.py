"""`VisualizeArgs`, the arguments of `visualize` (pipelines/tools/visualize.py, which re-exports them), in
a module that imports no torch, so that `visualize --help` answers at once."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stagecache.core.boxes import BOX_SETS, check_box_set


@dataclass
class VisualizeArgs:
    """Arguments of `visualize`; each field's help is its CLI option's (pipelines/commands/options.py)."""

    out_dir: str = field(metadata={"help": "Output directory for the PNG files.", "option": "--out"})
    timestamp: float = field(metadata={"help": "Keyframe timestamp (AVA seconds)."})
    video: str = field(default="", metadata={"help": "Video file to take the frame from. Default: a blank canvas."})
    video_name: str = field(default="", metadata={
        "help": "AVA video id in the predictions/store. Default: the video file's stem."})
    time_offset: float = field(default=0.0, metadata={
        "help": "video time = timestamp - offset (900 for AVA's trimmed clips and the synthetic data)."})
    predictions: str = field(default="", metadata={
        "help": "AVA predictions CSV to draw (alternative to --run/--store)."})
    label_map: str = field(default="", metadata={
        "help": "Label map of --predictions. Default: the AVA 60-class list."})
    run_dir: str = field(default="", metadata={
        "help": "train-head run directory: predict the keyframe and draw attention.", "option": "--run"})
    store: str = field(default="", metadata={"help": "Feature store holding the keyframe (with --run)."})
    boxes: str = field(default="proposals", metadata={"help": "Actor boxes (with --run).", "choices": BOX_SETS})
    score_threshold: float = field(default=0.8, metadata={"help": "Minimum proposal score (with --run)."})
    top_k: int = field(default=3, metadata={"help": "Labels shown per actor."})
    min_score: float = field(default=0.05, metadata={"help": "Labels below this score are not shown."})
    actor: int = field(default=-1, metadata={
        "help": "Actor (index on the keyframe) whose STAGE attention is drawn; -1: all."})
    layer: int = field(default=-1, metadata={"help": "Layer / HR2O block whose attention is drawn (-1: the last)."})
    width: int = field(default=640, metadata={"help": "Blank canvas width."})
    height: int = field(default=360, metadata={"help": "Blank canvas height."})
    device: str = field(default="cpu", metadata={"help": "Device for the head (cpu, cuda, auto)."})

    def __post_init__(self):
        if bool(self.predictions) == bool(self.run_dir):
            raise ValueError("give either --predictions or --run (with --store)")
        if self.run_dir and not self.store:
            raise ValueError("--run needs --store")
        if not self.video and not self.video_name:
            raise ValueError("give --video or --video-name")
        if self.video and not Path(self.video).exists():
            raise ValueError(f"video {self.video} not found")
        check_box_set(self.boxes)
        if self.top_k < 1 or self.width < 16 or self.height < 16:
            raise ValueError("top_k must be >= 1 and the canvas at least 16x16")
        if not self.video_name:
            self.video_name = Path(self.video).stem
