"""Synthetic AVA-format data, deterministic by seed: the demo, every head's tests and benchmarks.

Four modules, one simulation:
- `extract/synthetic_world.py`: the scene simulation (`simulate_world` -> `World`), the label map
  and the label rules (documented there in full; summary below);
- `extract/synthetic_video.py`: rendering with PyAV and the AVA files (`make_video_dataset`);
- `extract/synthetic_store.py`: the feature-level store without video (`make_feature_store`);
- `extract/synthetic_levels.py`: that store's roi / temporal / context levels (`levels=`).

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

from extract.synthetic_levels import LEVELS
from extract.synthetic_store import CODE_SEED, feature_codes, make_feature_store, video_arrays
from extract.synthetic_video import make_video_dataset, render_frames, write_label_files, write_video
from extract.synthetic_world import (
    FIRST_KEYFRAME, GROUPS, LABEL_IDS, LABEL_NAMES, OBJECT_CLASSES, POSES, R_ACT, R_OBJ, VIDEO_START,
    VideoSim,
    World, keyframes_for, label_rates, label_rules, seconds_for, simulate_proposals, simulate_video,
    simulate_world, video_name, video_tables,
)

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
    """Arguments of `synth videos` (validated here; `run()` calls `make_video_dataset`)."""

    out_dir: str
    seed: int = 0
    n_videos: int = 2
    seconds: int = 6
    fps: int = 30
    width: int = 160
    height: int = 120
    splits: tuple[str, ...] = ("train", "val")
    codec: str = "mpeg4"

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
    """Arguments of `synth store` (validated here; `run()` calls `make_feature_store`)."""

    path: str
    split: str = "train"
    seed: int = 0
    n_videos: int = 4
    keyframes_per_video: int = 30
    actor_dim: int = 64
    object_dim: int = 32
    backbone: str = "synthetic"
    proposals: bool = True
    noise: float = 1.0
    first_video: int = 0
    progress: bool = False
    levels: list[str] = field(default_factory=list)

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
