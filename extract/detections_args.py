"""`DetectionsArgs`, the arguments of `extract detections` (the job: extract/detectors/job.py), in a
module that imports no torch, so that `extract detections --help` answers at once; each field's
metadata is its CLI option (pipelines/commands/options.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from stagecache.core.registry_names import VG_POSTPROCESS_NAMES


@dataclass
class DetectionsArgs:
    """Arguments of `extract detections`; each field's help is its CLI option's
    (pipelines/commands/options.py)."""

    video_dir: str = field(metadata={"path": {"exists": True, "file_okay": False}, "help": "Folder of videos (<id>.mp4 ...) or PySlowFast frame folders."})
    out_dir: str = field(metadata={"option": "--out", "path": {"file_okay": False}, 
        "help": "Output folder: proposals.csv, objects.csv, parts/<video>.npz (features), config JSON."})
    keyframes: str | None = field(default=None, metadata={"path": {"exists": True, "dir_okay": False}, 
        "help": "CSV whose first two columns are video,timestamp (e.g. AVA annotations). [default: none]"})
    timestamps: str | None = field(default=None, metadata={  # inclusive range for every video found
        "help": "start:end[:step] seconds for every video found, e.g. 902:1798. [default: none]"})
    videos: tuple[str, ...] = field(default=(), metadata={"option": "--video", "help": "Only these video ids (repeatable). [default: all]"})
    fps: float | None = field(default=None, metadata={
        "help": "Frame-grid rate of the videos (jhmdb/ucf24: also timestamp = (frame - 1) / fps). "
                "[default: 30; ucf24: 25]"})
    dataset: str = field(default="ava", metadata={
        "help": "jhmdb / ucf24: keyframes from the --annotations GT pickle (every annotated frame of the split "
                "and side, as extract features stores them), --video-dir is the dataset root; any other name: "
                "--keyframes or --timestamps."})
    annotations: str | None = field(default=None, metadata={"path": {"exists": True, "dir_okay": False}, 
        "help": "jhmdb/ucf24: the ACT GT pickle (JHMDB-GT.pkl / UCF101v2-GT.pkl). [default: none]"})
    split: str | None = field(default=None, metadata={
        "help": "jhmdb/ucf24: split N with --side, or train<N> / test<N>. [default: none]"})
    side: str | None = field(default=None, metadata={"choices": ["train", "test"], 
        "help": "jhmdb/ucf24: which videos of split N. [default: none]"})
    frame_stride: int | None = field(default=None, metadata={"range": {"min": 1}, 
        "help": "jhmdb/ucf24: keyframes at frames 1, 1+N, ... that have a GT box. [default: every annotated frame]"})
    time_offset: float = field(default=0.0, metadata={  # see extract/video.py
        "help": "video time = timestamp - offset (900 for AVA's trimmed 15-min clips / frame folders)."})
    kinetics_names: bool = field(default=False, metadata={
        "help": "Videos named <id>_<start>_<end>: offset = start per video."})
    person_detector: str = field(default="torchvision", metadata={"choices": ["torchvision", "detectron2", "precomputed", "none"], "help": "Person detector."})
    person_weights: str | None = field(default=None, metadata={"path": {"exists": True, "dir_okay": False}, 
        "help": "torchvision state_dict (fasterrcnn_resnet50_fpn_v2 COCO) or detectron2 weights. [default: none]"})
    person_config: str | None = field(default=None, metadata={"path": {"exists": True, "dir_okay": False}, 
        "help": "detectron2 config file for --person-detector detectron2. [default: none]"})
    person_file: str | None = field(default=None, metadata={"path": {"exists": True}, 
        "help": "Proposals file (CSV / MMAction2 pkl / COCO json) for --person-detector precomputed. [default: none]"})
    person_score_thresh: float = field(default=0.8, metadata={"range": {"min": 0, "max": 1}, "help": "Minimum person score."})
    person_nms_thresh: float = field(default=0.5, metadata={"option": "--person-nms", "range": {"min": 0, "max": 1, "min_open": True}, "help": "Person NMS IoU (1 = no NMS)."})
    person_max: int = field(default=50, metadata={"range": {"min": 1}, "help": "Maximum people per keyframe."})
    person_min_size: int = field(default=800, metadata={"range": {"min": 32}, "help": "torchvision person detector input shortest side."})
    person_max_size: int = field(default=1333, metadata={"range": {"min": 32}, "help": "torchvision person detector input longest side."})
    objects: str = field(default="none", metadata={"choices": ["vg", "vg-detectron2", "precomputed", "none"], 
        "help": "Object detector: built-in VG Faster R-CNN, the same through detectron2, bottom-up-attention "
                "TSV/npz files, or none."})
    vg_weights: str | None = field(default=None, metadata={"path": {"exists": True, "dir_okay": False}, 
        "help": "faster_rcnn_from_caffe_attr.pkl / faster_rcnn_from_caffe.pkl (or a detectron2 .pth). [default: none]"})
    vg_config: str | None = field(default=None, metadata={"path": {"exists": True, "dir_okay": False}, 
        "help": "py-bottom-up-attention config for --objects vg-detectron2. [default: none]"})
    vg_classes: str | None = field(default=None, metadata={"path": {"exists": True, "dir_okay": False}, 
        "help": "objects_vocab.txt (1600 lines); without it classes are named vg_<i>. [default: none]"})
    objects_file: str | None = field(default=None, metadata={"path": {"exists": True}, 
        "help": "bottom-up-attention TSV, npz file or folder of npz for --objects precomputed. [default: none]"})
    object_score_thresh: float = field(default=0.2, metadata={"range": {"min": 0, "max": 1}, 
        "help": "Minimum object score (bottom-up attention: 0.2)."})
    object_nms_thresh: float = field(default=0.3, metadata={"option": "--object-nms", "range": {"min": 0, "max": 1, "min_open": True}, "help": "Per-class NMS IoU for objects."})
    max_objects: int = field(default=25, metadata={"range": {"min": 1}, "help": "Maximum objects per keyframe (top by score)."})
    min_objects: int = field(default=0, metadata={"range": {"min": 0}, 
        "help": "Minimum objects per keyframe (filled with the best remaining proposals)."})
    box_source: str = field(default="regressed", metadata={"choices": ["regressed", "proposal"], 
        "help": "Object box: class-regressed (py-bottom-up-attention) or the RPN proposal (Caffe generate_tsv)."})
    vg_postprocess: str = field(default="caffe", metadata={"choices": list(VG_POSTPROCESS_NAMES),
        "help": "VG objects kept: caffe = each proposal's best class after per-class NMS (--object-nms), as "
                "bottom-up-attention's generate_tsv.py; fork-demo = the top --max-objects (proposal, class) "
                "pairs with score > --object-score-thresh, NMS 0.5, 0.6, ... 0.9 until that many survive, as "
                "py-bottom-up-attention's demo (a proposal may repeat; no --min-objects)."})
    vg_min_size: int = field(default=600, metadata={"range": {"min": 32}, "help": "VG detector input shortest side."})
    vg_max_size: int = field(default=1000, metadata={"range": {"min": 32}, "help": "VG detector input longest side."})
    random_init: bool = field(default=False, metadata={
        "help": "Random detector weights: TESTS/DEMO ONLY, the detections are meaningless."})
    batch_size: int = field(default=4, metadata={"range": {"min": 1}, "help": "Keyframes per batch."})
    device: str = field(default="cpu", metadata={"help": "torch device (cpu, cuda, cuda:1)."})
    overwrite: bool = field(default=False, metadata={
        "help": "Recompute videos already in --out (otherwise they are kept and the job resumes)."})
    trust_pickle: bool = field(default=False, metadata={  # core.safe_pickle
        "help": "Load weights, --person-file pickles and npz files with full unpickling (can run code in "
                "the file: only for files you trust). Default: plain data only, anything else is refused."})

    def __post_init__(self):
        # Imported here, not with the module: `extract detections --help` must not load torch (issue 32).
        from stagecache.extract.datasets.tubes_pkl import TUBE_DATASETS, split_name
        from stagecache.extract.detectors import OBJECT_DETECTORS, PERSON_DETECTORS
        from stagecache.extract.detectors.vg_postprocess import check_postprocess

        self.videos = tuple(self.videos)
        if not os.path.isdir(self.video_dir):
            raise ValueError(f"video_dir {self.video_dir} is not a directory")
        tube = TUBE_DATASETS.get(self.dataset)
        if tube is not None:  # JHMDB-21 / UCF101-24: the split's keyframes from the GT pickle
            if self.annotations is None or self.split is None:
                raise ValueError(f"dataset {self.dataset} needs annotations (the GT pickle) and split")
            if not os.path.isfile(self.annotations):
                raise ValueError(f"annotations file {self.annotations} does not exist")
            if self.keyframes is not None or self.timestamps is not None or self.kinetics_names:
                raise ValueError(f"dataset {self.dataset} takes its keyframes from annotations: "
                                 "no keyframes, timestamps or kinetics_names")
            self.split = split_name(self.split, self.side)
            if self.frame_stride is not None and self.frame_stride < 1:
                raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")
        elif any(x is not None for x in (self.annotations, self.split, self.side, self.frame_stride)):
            raise ValueError(f"annotations, split, side and frame_stride are for dataset "
                             f"{' / '.join(sorted(TUBE_DATASETS))}")
        elif (self.keyframes is None) == (self.timestamps is None):
            raise ValueError("give exactly one of keyframes (a CSV) and timestamps (start:end[:step])")
        if self.fps is None:
            self.fps = tube.fps if tube is not None else 30.0
        if self.keyframes is not None and not os.path.isfile(self.keyframes):
            raise ValueError(f"keyframes file {self.keyframes} does not exist")
        if self.timestamps is not None:
            parse_range(self.timestamps)
        if self.person_detector != "none" and self.person_detector not in PERSON_DETECTORS:
            raise ValueError(f"unknown person detector {self.person_detector!r}; valid: "
                             f"{sorted(PERSON_DETECTORS) + ['none']}")
        if self.objects not in OBJECT_DETECTORS:
            raise ValueError(f"unknown objects {self.objects!r}; valid: {sorted(OBJECT_DETECTORS)}")
        if self.person_detector == "none" and self.objects == "none":
            raise ValueError("nothing to do: person_detector and objects are both 'none'")
        need = {"detectron2": ("person_config", "person_weights"), "precomputed": ("person_file",)}
        for attr in need.get(self.person_detector, ()):
            if getattr(self, attr) is None:
                raise ValueError(f"person_detector {self.person_detector!r} needs {attr}")
        need = {"vg-detectron2": ("vg_config", "vg_weights"), "precomputed": ("objects_file",)}
        for attr in need.get(self.objects, ()):
            if getattr(self, attr) is None:
                raise ValueError(f"objects {self.objects!r} needs {attr}")
        for name in ("person_weights", "person_config", "person_file", "vg_weights", "vg_config",
                     "vg_classes", "objects_file"):
            p = getattr(self, name)
            if p is not None and not os.path.exists(p):
                raise ValueError(f"{name}: {p} does not exist")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        check_postprocess(self.vg_postprocess, self.min_objects)


def parse_range(spec: str) -> np.ndarray:
    try:
        parts = [float(p) for p in spec.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        step = parts[2] if len(parts) == 3 else 1.0
        if step <= 0 or parts[1] < parts[0]:
            raise ValueError
    except ValueError:
        raise ValueError(f"timestamps must be start:end[:step] with start <= end, step > 0; got {spec!r}") from None
    n = int(np.floor((parts[1] - parts[0]) / step + 1e-9)) + 1
    return parts[0] + step * np.arange(n)
