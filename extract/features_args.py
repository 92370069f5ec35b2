"""`ExtractArgs`, the arguments of `extract features` (the job: extract/features.py), validated and
resolved where the dataset decides (jhmdb / ucf24: split names, frame rate, label map from the GT
pickle). Each field's metadata is its CLI option (pipelines/commands/options.py) and says whether it
changes what is stored ("stored": "base" | "features" | None; no key: "features"): the store records
those options and a resume must give the same values (extract/features_record.py). A new option that
changes nothing stored says "stored": None."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from stagecache.core.errors import UserError
from stagecache.core.registry_names import BACKBONE_NAMES, LEVEL_NAMES as LEVELS  # extract.store.schema's

_FILE = {"exists": True, "dir_okay": False}
_TUBES = "JHMDB-21 / UCF101-24 options"  # the --help heading of the options only they take
_AVA_KINETICS = "AVA-Kinetics options"


@dataclass
class ExtractArgs:
    """Arguments of `extract features`."""

    split: str = field(metadata={  # the store's root attrs hold it
        "stored": None, "help": "Split name stored in the store (train, val, ...); jhmdb/ucf24: N with --side, "
                                "or train<N> / test<N>."})
    videos: str = field(metadata={"stored": None,
        "help": "Folder of videos (any container PyAV reads; id = file stem) or PySlowFast frame folders "
                "frames/<video>/<video>_%06d.jpg.", "path": {"exists": True, "file_okay": False}})
    label_map: str | None = field(default=None, metadata={"stored": "base",  # jhmdb/ucf24: from the GT pickle
        "help": "Label map pbtxt; the store's label columns follow its order.", "path": _FILE})
    dataset: str = field(default="ava", metadata={"stored": "base",
        "help": "Dataset name for the default output path; jhmdb / ucf24 read --annotations as the ACT GT pickle "
                "(JHMDB-GT.pkl / UCF101v2-GT.pkl, label map from it) and --videos as the dataset root (Frames/ or "
                "rgb-images/ frame folders, or <class>/<clip>.<ext> videos); multisports the same with "
                "multisports_GT.pkl (rawframes/ or trainval/, test/ videos; --proposals: its person-box pickle); "
                "ava-kinetics: AVA's files plus --kinetics-annotations, clips <id>_<start>_<end> in --videos."})
    out: str | None = field(default=None, metadata={"stored": None, "help": "Feature store path.",
                                                    "show_default": "cache/<dataset>/<split>.zarr"})
    annotations: str | None = field(default=None, metadata={"stored": "base",
        "help": "GT annotation CSV (stored as is_gt rows with multi-hot labels and person ids).", "path": _FILE})
    proposals: str | None = field(default=None, metadata={"stored": "base",
        "help": "Person proposals (CSV / MMAction2 .pkl / COCO .json), stored with raw scores.", "path": _FILE})
    person_detector: str = field(default="precomputed", metadata={"stored": "base",
        "help": "precomputed (the --proposals file) | torchvision | detectron2 (run on each keyframe frame)."})
    person_detector_kwargs: dict = field(default_factory=dict, metadata={"stored": "base",
        "help": "JSON object of keyword arguments for the person detector.", "option": "--person-detector-args",
        "json": True})
    objects: str = field(default="none", metadata={"stored": "base",
        "help": "none | precomputed (--objects-file CSV) | an object detector name (extract.detectors)."})
    objects_file: str | None = field(default=None, metadata={"stored": "base",
        "help": "Objects CSV video,timestamp,x1,y1,x2,y2,class_id,score for --objects precomputed.", "path": _FILE})
    object_classes: str | None = field(default=None, metadata={"stored": "base",  # precomputed objects
        "help": "Text file of object class names, one per line in class-id order (--objects precomputed).",
        "path": _FILE})
    object_detector_kwargs: dict = field(default_factory=dict, metadata={"stored": "base",
        "help": "JSON object of keyword arguments for the object detector.", "option": "--object-detector-args",
        "json": True})
    min_proposal_score: float = field(default=0.0, metadata={"stored": "base",
        "help": "Drop proposals below this score at extraction (scores are stored raw; thresholds such as "
                "SlowFast's 0.9 train / 0.8 test are applied at training time)."})
    transfer_labels: bool = field(default=True, metadata={"stored": "base",
        "help": "Copy GT labels to proposals overlapping a GT box (SlowFast/LFB convention)."})
    label_iou: float = field(default=0.9, metadata={"stored": "base",
        "help": "IoU for label transfer (SlowFast/LFB: 0.9; STAGE's I3D setting: 0.5)."})
    backbone: str = field(default="slowfast_r50", metadata={
        "help": f"Backbone: {', '.join(sorted(BACKBONE_NAMES))}.", "choices": sorted(BACKBONE_NAMES), "metavar": "NAME"})
    group: str | None = field(default=None, metadata={"stored": None, "help": "Store group for the features.",
                                                      "show_default": "the backbone name"})
    checkpoint: str | None = field(default=None, metadata={
        "help": "pytorchvideo hub file, PySlowFast .pyth or Caffe2 .pkl checkpoint; ViT backbones: a Hugging Face "
                "model folder (config.json + model.safetensors), .safetensors, or the original .pth / .pt.",
        "path": {"exists": True}})
    random_init: bool = field(default=False, metadata={
        "help": "Random weights (tests/demo only; warns on every run and is recorded in the store)."})
    allow_partial_checkpoint: bool = field(default=False, metadata={"stored": None,
        "help": "Load the matching keys of a checkpoint with missing/unexpected keys instead of failing."})
    trust_pickle: bool = field(default=False, metadata={"stored": None,  # core.safe_pickle
        "help": "Load the --proposals pickle, the --annotations GT pickle (jhmdb/ucf24) and --checkpoint with full "
                "unpickling (can run code in the file: only for files you trust). Default: plain data only, "
                "anything else is refused."})
    res5_dilation: bool = field(default=False, metadata={
        "help": "res5 spatial stride 1 with dilation 2 (output stride 16, as the AVA papers).",
        "option": "--res5-dilation/--no-res5-dilation"})
    backbone_kwargs: dict = field(default_factory=dict, metadata={  # constructor overrides (tiny test configs)
        "help": "JSON object of pytorchvideo constructor overrides (e.g. tiny test configs).",
        "option": "--backbone-args", "json": True})
    sampling_overrides: dict = field(default_factory=dict, metadata={
        "help": "JSON object overriding the published clip sampling (frames, rate, alpha, short_side, ...).",
        "option": "--sampling-args", "json": True})
    save: tuple[str, ...] = field(default=(), metadata={
        "help": f"Extra levels, comma separated: {','.join(LEVELS)}.", "sep": ",", "choices": list(LEVELS)})
    layers: str | None = field(default=None, metadata={  # extract/vit/specs.py parse_layers
        "help": "ViT backbones: also store the pooled per-box feature of these encoder blocks (1-based: 8,16,24 or "
                "all), each in its own group <group>.l<N> beside the last block's (train-head --layer N).",
        "show_default": "none"})
    context_grid: int | None = field(default=None, metadata={
        "help": "Adaptive-avg-pool the context map to N x N (default: full map)."})
    roi_resolution: int = field(default=7, metadata={"help": "RoIAlign output size."})
    roi_aligned: bool = field(default=True, metadata={
        "help": "RoIAlign aligned=True (PySlowFast); pytorchvideo's own head uses False."})
    time_offset: float | None = field(default=None, metadata={"stored": "base",  # see extract/video.py
        "help": "video_time = annotation timestamp - offset (AVA trimmed 15-min clips: 900; full movies: 0). A "
                "keyframe outside its video is dropped with a warning; a video that loses every keyframe fails "
                "(and with none left the run stops before writing anything).",
        "show_default": "0 for video files, 900 for frame folders"})
    kinetics_names: bool = field(default=False, metadata={"stored": "base",
        "help": "AVA-Kinetics: files <id>_<start>_<end>.* map to video <id> with offset <start>."})
    kinetics_annotations: str | None = field(default=None, metadata={"stored": "base", "path": _FILE,
        "help": "ava-kinetics: the Kinetics part's GT CSV (kinetics_{train,val}_v1.0.csv); --annotations is AVA's "
                "(extract/datasets/ava_kinetics.py).", "group": _AVA_KINETICS})
    subset: str = field(default="all", metadata={"stored": "base", "choices": ["all", "ava", "kinetics"],
        "help": "ava-kinetics: extract the videos of AVA's rows, the Kinetics rows' clips, or all (a val store of "
                "--subset ava validates on AVA alone).", "group": _AVA_KINETICS})
    fps: float | None = field(default=None, metadata={"stored": "base",  # None: the dataset's
        "help": "Frame grid of the clip sampling (jhmdb/ucf24: also timestamp = (frame - 1) / fps).",
        "show_default": "30; ucf24: 25"})
    batch_size: int = field(default=8, metadata={"stored": None, "help": "Clips per backbone batch."})
    num_workers: int = field(default=2, metadata={"stored": None, "help": "Decoding threads (0: inline)."})
    device: str = field(default="cuda", metadata={"stored": None,  # without CUDA, __post_init__ falls back to the CPU (and says so)
        "help": "Torch device; under torchrun cuda picks LOCAL_RANK."})
    amp: bool = field(default=True, metadata={"stored": None, "help": "Autocast on GPU."})
    shard: str | None = field(default=None, metadata={"stored": None,  # "i/n"
        "help": "i/n: this process does videos i, i+n, ... of the sorted list.",
        "show_default": "RANK/WORLD_SIZE from torchrun, else 0/1"})
    allow_config_mismatch: bool = field(default=False, metadata={"stored": None,
        "help": "Write into a group whose stored configuration differs."})
    flush_mb: int = field(default=64, metadata={"stored": None, "help": "Store flush threshold (MiB)."})
    seed: int = field(default=0, metadata={"help": "Seed (random-init weights, --gt-jitter draws)."})
    progress: bool = field(default=True, metadata={"stored": None, "help": "tqdm progress bar."})
    limit_videos: int | None = field(default=None, metadata={"stored": None, "help": "Only the first N videos."})
    excluded: str | None = field(default=None, metadata={"stored": "base", "path": _FILE, "help":
        "AVA's excluded timestamps CSV (ava_val_excluded_timestamps_v2.2.csv): recorded in the store's base attrs "
        "(excluded_file, excluded_timestamps), which train-head's validation leaves out."})
    restart: bool = field(default=False, metadata={"stored": None, "help":
        "Start the feature group over (and base, when the box options changed and no other group uses it) when "
        "the store was extracted with other options; without it such a rerun is refused."})
    # jhmdb/ucf24 only (extract.datasets):
    side: str | None = field(default=None, metadata={"stored": None,
        "help": "jhmdb/ucf24: which videos of split N (store split name <side><N>).", "choices": ["train", "test"],
        "group": _TUBES})
    frame_stride: int | None = field(default=None, metadata={"stored": "base",  # None: every annotated frame
        "help": "jhmdb/ucf24: keyframes at frames 1, 1+N, 1+2N, ... that have a GT box.", "range": {"min": 1},
        "show_default": "every annotated frame", "group": _TUBES})
    gt_jitter: float = field(default=0.0, metadata={"stored": "base",  # extract/datasets/tube_boxes.py; 0: off
        "help": "jhmdb/ucf24 training boxes without detections: add jittered copies of every GT box as proposals "
                "(score 1, labels by --label-iou transfer; use 0.5 with F = 0.1), each side moved by up to F x the "
                "box size, drawn from --seed per (video, frame, tube). 0: off.",
        "range": {"min": 0, "max": 0.5, "max_open": True}, "group": _TUBES})
    gt_jitter_copies: int = field(default=1, metadata={"stored": "base",
        "help": "jhmdb/ucf24: jittered copies per GT box (with --gt-jitter).", "range": {"min": 1}, "group": _TUBES})

    def __post_init__(self):
        # Imported here, not with the module: `extract features --help` must not load torch (issue 32).
        import torch

        from stagecache.extract.backbones import BACKBONES
        from stagecache.extract.datasets import TUBE_DATASETS
        from stagecache.extract.datasets.tubes_pkl import split_name
        from stagecache.extract.vit.specs import VIT_SPECS, parse_layers

        self.save = tuple(s for s in (self.save.split(",") if isinstance(self.save, str) else self.save) if s)
        if not self.split:
            raise ValueError("split must be a non-empty name")
        tube = TUBE_DATASETS.get(self.dataset)
        if tube is not None:  # JHMDB-21 / UCF101-24 (extract/datasets/tubes_pkl.py)
            if self.annotations is None:
                raise ValueError(f"--dataset {self.dataset} needs --annotations <GT pickle>")
            if self.split.isdigit() and self.side is None:
                raise ValueError("--split N needs --side train|test")
            self.split = split_name(self.split, self.side)  # a bad name: TubeFormatError, one line (exit 1)
        else:
            if self.label_map is None:
                raise ValueError("Missing option '--label-map'.")
            if self.dataset == "ava-kinetics":  # clips <id>_<start>_<end> (extract/datasets/ava_kinetics.py)
                self.kinetics_names = True
            elif self.kinetics_annotations is not None or self.subset != "all":
                raise ValueError("--kinetics-annotations and --subset are for --dataset ava-kinetics")
            if self.frame_stride is not None or self.side is not None or self.gt_jitter:
                raise ValueError("--frame-stride, --side and --gt-jitter are for --dataset jhmdb / ucf24")
        if self.fps is None:
            self.fps = tube.fps if tube is not None else 30.0
        for name in ("videos", "label_map", "annotations", "proposals", "objects_file", "object_classes", "checkpoint",
                     "excluded", "kinetics_annotations"):
            p = getattr(self, name)
            if p is not None and not Path(p).exists():
                raise ValueError(f"{name}: {p} does not exist")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; valid: {', '.join(sorted(BACKBONES))}")
        check_backbone_args(self.backbone, self.backbone_kwargs, self.sampling_overrides)
        if self.checkpoint is None and not self.random_init:
            raise ValueError("no --checkpoint given: pass one, or --random-init for tests and the demo "
                             "(random weights give meaningless features)")
        if self.checkpoint is not None and self.random_init:
            raise ValueError("--checkpoint and --random-init exclude each other")
        bad = set(self.save) - set(LEVELS)
        if bad:
            raise ValueError(f"--save: unknown levels {sorted(bad)}; valid: {', '.join(LEVELS)}")
        if self.context_grid is not None and self.context_grid < 1:
            raise ValueError(f"context_grid must be >= 1, got {self.context_grid}")
        if not 0.0 < self.label_iou <= 1.0:
            raise ValueError(f"label_iou must be in (0, 1], got {self.label_iou}")
        if self.objects == "precomputed" and self.objects_file is None:
            raise ValueError("--objects precomputed needs --objects-file (an objects CSV)")
        if self.person_detector == "precomputed" and self.annotations is None and self.proposals is None:
            raise ValueError("with --person-detector precomputed give --annotations and/or --proposals")
        if self.batch_size < 1 or self.num_workers < 0 or self.roi_resolution < 1:
            raise ValueError("batch_size and roi_resolution must be >= 1, num_workers >= 0")
        if self.shard is not None:
            parse_shard(self.shard)
        if self.gt_jitter and (tube is None or not 0 < self.gt_jitter < 0.5 or self.gt_jitter_copies < 1):
            raise ValueError("gt_jitter (in (0, 0.5), copies >= 1) is for --dataset jhmdb / ucf24")
        if self.group is None:
            self.group = self.backbone
        if parse_layers(self.layers) and self.backbone not in VIT_SPECS:  # a bad block list: ValueError here
            raise ValueError(f"--layers: backbone {self.backbone} has no per-layer features (the ViT backbones do: "
                             f"{', '.join(VIT_SPECS)})")
        if self.group == "base":
            raise ValueError("group 'base' is reserved for the boxes")
        if self.out is None:
            self.out = str(Path("cache") / self.dataset / f"{self.split}.zarr")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            print("CUDA not available: using the CPU", file=sys.stderr)
            self.device = "cpu"


class BackboneArgsError(UserError, ValueError):
    """A --backbone-args / --sampling-args key the backbone does not take."""


def check_backbone_args(backbone: str, kwargs: dict, sampling: dict) -> None:
    """Keys of --backbone-args (the backbone's builder keywords) and --sampling-args (`Sampling`'s
    fields), checked before any video is read: a misspelt key is one line listing the valid ones."""
    from stagecache.extract.backbones import Sampling, backbone_keywords

    valid = sorted(f.name for f in fields(Sampling))
    bad = sorted(set(sampling) - set(valid))
    if bad:
        raise BackboneArgsError(f"--sampling-args: unknown key(s) {', '.join(bad)}; valid: {', '.join(valid)}")
    accepted = backbone_keywords(backbone)
    bad = sorted(set(kwargs) - accepted) if accepted is not None else []
    if bad:
        raise BackboneArgsError(f"--backbone-args: backbone {backbone} takes no {', '.join(bad)}; valid: "
                                f"{', '.join(sorted(accepted))}")


def parse_shard(s: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in s.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {s!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {s!r}: need 0 <= i < n")
    return i, n
