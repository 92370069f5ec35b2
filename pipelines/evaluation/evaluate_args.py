"""`EvaluateCommandArgs`, the arguments of the `evaluate` command: AVA frame-mAP of one predictions
CSV (`ava.EvaluateArgs` -> `ava.run_evaluate`) or, with --dataset jhmdb / ucf24, frame-mAP and
video-mAP of one predictions CSV per split (`tubes.TubeEvalArgs` -> `tubes.run_tube_eval`). Each
field's metadata is its CLI option (pipelines/commands/options.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from stagecache.extract.datasets.tubes_pkl import TUBE_DATASETS
from stagecache.pipelines.evaluation.ava import DEFAULT_LABEL_MAP, PROTOCOLS, EvaluateArgs, run_evaluate
from stagecache.pipelines.evaluation.multisports import MultiSportsEvalArgs, run_multisports_eval
from stagecache.pipelines.evaluation.tubes import (DEFAULT_TUBE_PROTOCOL, TUBE_PROTOCOLS, VIDEO_IOUS, TubeEvalArgs,
                                                  run_tube_eval)

_FILE = {"exists": True, "dir_okay": False}
_TUBES = "JHMDB-21 / UCF101-24 options"  # the --help heading of the options only they take


@dataclass
class EvaluateCommandArgs:
    """Arguments of `evaluate`."""

    gt: str = field(metadata={"help": "Ground-truth CSV video,timestamp,x1,y1,x2,y2,action_id[,person_id].",
                              "path": _FILE})
    pred: tuple[str, ...] = field(metadata={
        "help": "Predictions CSV video,timestamp,x1,y1,x2,y2,action_id,score (jhmdb/ucf24: repeat, one per --split).",
        "path": _FILE})
    label_map: str = field(default=str(DEFAULT_LABEL_MAP), metadata={
        "help": "Label map pbtxt; only its classes are evaluated (default: the 60-class ActivityNet list).",
        "path": _FILE})
    excluded: str | None = field(default=None, metadata={
        "help": "Excluded-timestamps CSV video,timestamp; GT and detections there are ignored.", "path": _FILE})
    no_cap: bool = field(default=False, metadata={
        "help": "Keep every detection instead of the official top 50 (box, class) per keyframe."})
    iou: float = field(default=0.5, metadata={"help": "IoU threshold for a true positive."})
    json_path: str | None = field(default=None, metadata={
        "help": "Write {mAP, per_class, groups} JSON here (config saved beside it).", "option": "--json",
        "path": {"dir_okay": False}})
    plots: str | None = field(default=None, metadata={
        "help": "Directory for PR-curve PNGs (none when unset).", "path": {"file_okay": False}})
    plot_by: str = field(default="class", metadata={"help": "One PR plot per class, or per class group.",
                                                    "choices": ["class", "group"]})
    groups: str | None = field(default=None, metadata={
        "help": "Class-groups JSON {group: [ids]} for non-AVA label maps (AVA grouping is built in).", "path": _FILE})
    single_label: bool = field(default=False, metadata={
        "help": "Single-label datasets (JHMDB-21, UCF101-24): each GT box must have one label; no cap."})
    dataset: str = field(default="ava", metadata={
        "help": "jhmdb / ucf24 / multisports: --gt is the GT pickle; frame-mAP and video-mAP "
                "(pipelines/evaluation/tubes.py, multisports.py: MultiSports' own evaluator).",
        "choices": ["ava", *TUBE_DATASETS]})
    tube_splits: list[int] = field(default_factory=list, metadata={  # empty: split 1
        "help": "jhmdb/ucf24: split of each --pred (default 1).", "option": "--split", "group": _TUBES})
    fps: float | None = field(default=None, metadata={  # None: the dataset's
        "help": "jhmdb/ucf24: frame rate that turned frames into timestamps at extraction.",
        "show_default": "jhmdb 30, ucf24 25 (as extraction)", "group": _TUBES})
    min_tube_length: int | None = field(default=None, metadata={  # None: the protocol's
        "help": "jhmdb/ucf24: linked tubes shorter than this many frames are dropped.",
        "show_default": "the protocol's, 15", "group": _TUBES})
    video_ious: tuple[float, ...] = field(default=VIDEO_IOUS, metadata={
        "help": "jhmdb/ucf24: video-mAP thresholds, comma-separated (video-mAP@0.5:0.95 is always reported); "
                "multisports: 0.2,0.5 by default (and @0.1:0.9 always).",
        "option": "--video-iou", "sep": ",", "group": _TUBES})
    frame_stride: int = field(default=1, metadata={
        "help": "jhmdb/ucf24: the predictions are on keyframes 1, 1+N, 1+2N, ... (extraction's --frame-stride): "
                "frame-AP on those frames, linking over them (docs/EVALUATION.md).", "range": {"min": 1},
        "group": _TUBES})
    tubes_out: str | None = field(default=None, metadata={
        "help": "jhmdb/ucf24: write the linked tubes (after the tube NMS) as JSON here (format: docs/EVALUATION.md).",
        "path": {"dir_okay": False}, "group": _TUBES})
    protocol: str | None = field(default=None, metadata={  # None: official (AVA), moc (jhmdb/ucf24)
        "help": "Whose evaluator to reproduce. AVA: ActivityNet's official one, PySlowFast's or MMAction2's; "
                "jhmdb/ucf24: MOC-Detector's or ACT's (differences: docs/EVALUATION.md).",
        "choices": [*PROTOCOLS, *TUBE_PROTOCOLS], "show_default": f"official (AVA), {DEFAULT_TUBE_PROTOCOL} (jhmdb/ucf24)"})

    def __post_init__(self):
        self.pred, self.tube_splits = tuple(self.pred), [int(s) for s in self.tube_splits]
        if self.dataset != "ava" and self.dataset not in TUBE_DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: ava, {', '.join(TUBE_DATASETS)}")
        if self.dataset == "ava" and len(self.pred) != 1:
            raise ValueError("AVA evaluation takes one --pred file")
        tube = self.dataset != "ava"
        if self.protocol is not None and (self.protocol in TUBE_PROTOCOLS) != tube:
            raise ValueError(f"--protocol {self.protocol} is not one for --dataset {self.dataset}: "
                             f"{', '.join(TUBE_PROTOCOLS if tube else PROTOCOLS)}")
        self.target()  # its own checks

    def target(self) -> EvaluateArgs | TubeEvalArgs | MultiSportsEvalArgs:
        """The arguments of the evaluation this command runs."""
        if self.dataset == "multisports":  # one protocol: evaluate_multisports.py's (no --split, --protocol)
            if len(self.pred) != 1 or self.tube_splits not in ([], [1]) or self.protocol is not None:
                raise ValueError("--dataset multisports takes one --pred (its test videos), no --split or --protocol")
            return MultiSportsEvalArgs(gt=self.gt, pred=self.pred[0], fps=self.fps, iou=self.iou,
                                       video_ious=self.video_ious if self.video_ious != VIDEO_IOUS else (0.2, 0.5),
                                       min_tube_length=self.min_tube_length, frame_stride=self.frame_stride,
                                       json_path=self.json_path)
        if self.dataset != "ava":
            return TubeEvalArgs(dataset=self.dataset, gt=self.gt, preds=list(self.pred), splits=self.tube_splits or [1],
                                fps=self.fps, iou=self.iou, min_tube_length=self.min_tube_length,
                                json_path=self.json_path, protocol=self.protocol, video_ious=self.video_ious,
                                frame_stride=self.frame_stride, tubes_out=self.tubes_out)
        return EvaluateArgs(gt=self.gt, pred=self.pred[0], label_map=self.label_map, excluded=self.excluded,
                            no_cap=self.no_cap, iou=self.iou, json_path=self.json_path, plots=self.plots,
                            plot_by=self.plot_by, groups=self.groups, single_label=self.single_label,
                            protocol=self.protocol)


def run_evaluate_command(args: EvaluateCommandArgs, echo=print):
    target = args.target()
    if isinstance(target, TubeEvalArgs):
        return run_tube_eval(target, echo=echo)
    if isinstance(target, MultiSportsEvalArgs):
        return run_multisports_eval(target, echo=echo)
    return run_evaluate(target, echo=echo)
