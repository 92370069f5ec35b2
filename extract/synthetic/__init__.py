"""Synthetic AVA-format data, deterministic by seed: the demo, every head's tests and benchmarks.

One simulation, five modules (and `tubes` for the JHMDB-21 / UCF101-24 layouts):
- `extract/synthetic/scene.py`: one video's scene over time (`simulate_video` -> `VideoSim`);
- `extract/synthetic/world.py`: the label map, the label rules and the flat tables of many videos
  (`simulate_world` -> `World`; both documented in full there, summary below);
- `extract/synthetic/video.py`: rendering with PyAV and the AVA files (`make_video_dataset`);
- `extract/synthetic/store.py`: the feature-level store without video (`make_feature_store`);
- `extract/synthetic/levels.py`: that store's roi / temporal / context levels (`levels=`);
- `extract/synthetic/tubes.py`: synthetic JHMDB-21 / UCF101-24 data and its feature store;
- `extract/synthetic/multisports.py`, `ava_kinetics.py`: MultiSports' and AVA-Kinetics' layouts.

Label map (ids and rules, at keyframe t, box-centre distances in normalised coordinates):
    1 stand, 2 sit, 3 lie   pose (exactly one per actor-keyframe; Markov chain over seconds)
    4 hold cup              the nearest object is within r_obj = 0.15 and is a cup
    5 ride bike             the nearest object is within r_obj = 0.15 and is a bike
    6 talk to               another actor present at t is within r_act = 0.2
    7 get up                present at keyframe t - 1 (same person_id) with pose sit or lie there,
                            pose stand at t
Groups: {"pose": [1, 2, 3], "person-object": [4, 5], "person-person": [6], "temporal": [7]}.
Object classes: 0 cup, 1 bike, 2 phone, 3 chair. Videos `syn_000`, ...; keyframes 902, 903, ...;
video time = AVA timestamp - 900 (videos start at AVA second 900, 2 s before the first keyframe).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from stagecache.extract.store.schema import LEVELS
from stagecache.extract.synthetic.scene import (FIRST_KEYFRAME, OBJECT_CLASSES, POSES, VIDEO_START, VideoSim, keyframes_for,
                                     seconds_for, simulate_video, video_name)
from stagecache.extract.synthetic.store import CODE_SEED, feature_codes, make_feature_store, video_arrays
from stagecache.extract.synthetic.video import make_video_dataset, render_frames, write_label_files, write_video
from stagecache.extract.synthetic.world import (GROUPS, LABEL_IDS, LABEL_NAMES, R_ACT, R_OBJ, World, label_rates, label_rules,
                                     simulate_proposals, simulate_world, video_tables)

__all__ = [
    "LABEL_IDS", "LABEL_NAMES", "GROUPS", "OBJECT_CLASSES", "POSES", "R_OBJ", "R_ACT", "FIRST_KEYFRAME", "VIDEO_START",
    "World", "VideoSim", "simulate_world", "simulate_video", "video_tables", "label_rules",
    "label_rates", "simulate_proposals", "video_name", "seconds_for", "keyframes_for",
    "make_video_dataset", "render_frames", "write_video", "write_label_files",
    "make_feature_store", "video_arrays", "feature_codes", "CODE_SEED",
    "VideoDatasetArgs", "FeatureStoreArgs",
]


@dataclass
class VideoDatasetArgs:
    """Arguments of `synth videos` (validated here; `run()` calls `make_video_dataset`); each field's
    help is its CLI option's (pipelines/commands/options.py)."""

    out_dir: str = field(metadata={"help": "Output folder (videos/, annotations/, dataset.json).", "option": "--out",
                                   "path": {"file_okay": False}})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    n_videos: int = field(default=2, metadata={"help": "Videos per split.", "option": "--videos", "range": {"min": 1}})
    seconds: int = field(default=6, metadata={"help": "Video length in seconds (keyframes 902 .. 900 + seconds - 2).",
                                              "range": {"min": 4}})
    fps: int = field(default=30, metadata={"help": "Frame rate.", "range": {"min": 1}})
    width: int = field(default=160, metadata={"help": "Frame width (even)."})
    height: int = field(default=120, metadata={"help": "Frame height (even)."})
    splits: tuple[str, ...] = field(default=("train", "val"), metadata={"help": "Comma-separated split names.",
                                                                      "sep": ","})
    codec: str = field(default="mpeg4", metadata={"help": "PyAV video codec."})

    def __post_init__(self):
        self.splits = tuple(self.splits)
        if self.n_videos < 1:
            raise ValueError(f"n_videos must be >= 1, got {self.n_videos}")
        if self.seconds < 4:
            raise ValueError(f"seconds must be >= 4 (2 s of video around the keyframes), got {self.seconds}")
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1, got {self.fps}")
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise ValueError(f"width and height must be even and >= 16, got {self.width}x{self.height}")
        if not self.splits or len(set(self.splits)) != len(self.splits):
            raise ValueError(f"splits must be distinct non-empty names, got {self.splits}")

    def run(self):
        kw = asdict(self)
        return make_video_dataset(kw.pop("out_dir"), **kw)


@dataclass
class FeatureStoreArgs:
    """Arguments of `synth store` (validated here; `run()` calls `make_feature_store`); each field's
    help is its CLI option's (pipelines/commands/options.py)."""

    path: str = field(metadata={"help": "Store path (created or resumed).", "option": "--out"})
    split: str = field(default="train", metadata={"help": "Split name recorded in the store."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    n_videos: int = field(default=4, metadata={"help": "Number of videos.", "option": "--videos", "range": {"min": 1}})
    keyframes_per_video: int = field(default=30, metadata={"help": "Keyframes per video.", "option": "--keyframes",
                                                           "range": {"min": 1}})
    actor_dim: int = field(default=64, metadata={"help": "Actor feature dimension (2304 for SlowFast R50 scale).",
                                                 "range": {"min": 1}})
    object_dim: int = field(default=32, metadata={"help": "Object feature dimension.", "range": {"min": 1}})
    backbone: str = field(default="synthetic", metadata={"help": "Name of the feature group."})
    proposals: bool = field(default=True, metadata={"help": "Also write jittered-GT and false-positive proposal rows."})
    noise: float = field(default=1.0, metadata={"help": "Feature noise (expected norm of the noise vector).",
                                                "range": {"min": 0}})
    first_video: int = field(default=0, metadata={"help": "Index of the first video (names syn_<index>).",
                                                  "range": {"min": 0}})
    progress: bool = field(default=False, metadata={"no_option": "the command always shows the progress bar"})
    levels: list[str] = field(default_factory=list, metadata={
        "help": "Extra backbone levels, comma-separated subset of roi,temporal,context (for heads such as acrn/acar "
                "(context), sonly/igmn dam (roi), tonly (temporal)).", "sep": ","})

    def __post_init__(self):
        bad = sorted(set(self.levels) - set(LEVELS))
        if bad:
            raise ValueError(f"unknown level(s) {bad}; valid: {', '.join(LEVELS)}")
        for name in ("n_videos", "keyframes_per_video", "actor_dim", "object_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.first_video < 0:
            raise ValueError(f"first_video must be >= 0, got {self.first_video}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if not self.split:
            raise ValueError("split must be a non-empty name")
        if not self.backbone or self.backbone == "base":
            raise ValueError(f"backbone group name {self.backbone!r} is empty or reserved")

    def run(self):
        kw = asdict(self)
        return make_feature_store(kw.pop("path"), **kw)
