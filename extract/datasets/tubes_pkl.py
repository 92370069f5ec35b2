"""JHMDB-21 and UCF101-24 from the ACT-detector ground-truth pickles to `extract features` inputs.

`JHMDB-GT.pkl` / `UCF101v2-GT.pkl` (ACT detector, redistributed by MOC-Detector and MMAction2)
are Python 2 pickles (read with encoding="latin1", through `core.safe_pickle`) of a dict:
  labels        [class name] (label index = position)
  gttubes       {video: {label index: [array (n, 5): frame (1-based), x1, y1, x2, y2 in pixels]}}
  nframes       {video: number of frames}
  train_videos  [[video] per split]   (JHMDB: 3 splits, UCF101-24: 1)
  test_videos   [[video] per split]
  resolution    {video: (height, width)}
`<video>` is `<class>/<clip>`. Frames: `Frames/<video>/%05d.png` (JHMDB) and
`rgb-images/<video>/%05d.jpg` (UCF101-24), frame k = file k; a raw video `<video>.<ext>` is
used where no frame folder exists.

Conversion (documented choices):
  keyframes   frames f with at least one GT box and (f - 1) % frame_stride == 0; the default
              stride 1 keeps every annotated frame (what frame-mAP evaluates).
  time        timestamp = (f - 1) / fps, fps = the dataset's frame rate (JHMDB 30, UCF101 25) unless
              given; the clip readers map it back to frame f (time offset 0).
  actors      one GT row per tube present at the frame, its box divided by (width, height) of the
              recorded resolution (clipped to [0, 1]), one label = the tube's class (label-map id =
              label index + 1), track id = the tube's index in the video (tubes enumerated by label
              index, then list order). UCF101-24's tubes may start/end inside a video and overlap in
              time: every one is kept.
  splits      a store per split and side: split name `train<N>` / `test<N>` (N 1-based).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stagecache.extract import ava_io
from stagecache.core.errors import UserError
from stagecache.core.safe_pickle import load_pickle
from stagecache.extract.video import VIDEO_EXTENSIONS

KEYS = ("labels", "gttubes", "nframes", "train_videos", "test_videos", "resolution")


class TubeFormatError(UserError, ValueError):
    """A GT pickle that does not have the ACT structure; the message names the file (and video)."""


@dataclass(frozen=True)
class TubeDatasetSpec:
    name: str
    fps: float
    frame_dir: str  # folder of frame folders under the dataset root
    frame_name: str  # file name of frame k (1-based)
    splits: int
    video_dirs: tuple[str, ...] = ("", "videos")  # folders under the root holding <video>.<ext> files


TUBE_DATASETS: dict[str, TubeDatasetSpec] = {
    "jhmdb": TubeDatasetSpec("jhmdb", 30.0, "Frames", "{:05d}.png", 3),
    "ucf24": TubeDatasetSpec("ucf24", 25.0, "rgb-images", "{:05d}.jpg", 1),
    # MultiSports (extract/datasets/multisports.py): the same pickle layout, videos as released
    "multisports": TubeDatasetSpec("multisports", 25.0, "rawframes", "{:05d}.jpg", 1,
                                   ("", "videos", "trainval", "test")),
}


def dataset_spec(name: str) -> TubeDatasetSpec:
    try:
        return TUBE_DATASETS[name]
    except KeyError:
        raise TubeFormatError(f"unknown tube dataset {name!r}; valid: {', '.join(sorted(TUBE_DATASETS))}") from None


@dataclass
class TubeGT:
    """The pickle's content, validated. `tubes[video]` is a list of (label index, (n, 5) float64)."""

    path: str
    labels: list[str]
    tubes: dict[str, list[tuple[int, np.ndarray]]]
    nframes: dict[str, int]
    train_videos: list[list[str]]
    test_videos: list[list[str]]
    resolution: dict[str, tuple[int, int]]  # (height, width)

    def label_map(self) -> ava_io.LabelMap:
        return ava_io.LabelMap(ids=list(range(1, len(self.labels) + 1)), names=list(self.labels))

    def videos(self, side: str, split: int) -> list[str]:
        lists = self.train_videos if side == "train" else self.test_videos
        if not 1 <= split <= len(lists):
            raise TubeFormatError(f"{self.path}: split {split} does not exist (the file has {len(lists)})")
        return list(lists[split - 1])


def _fail(path, msg: str):
    raise TubeFormatError(f"{path}: {msg}")


def read_tube_pickle(path: str | Path, *, trust: bool = False, keep_dtype: bool = False) -> TubeGT:
    """Read and validate a JHMDB-GT.pkl / UCF101v2-GT.pkl file. keep_dtype: float32 tubes stay
    float32 (MultiSports' evaluator computes tube areas in the pickle's own type)."""
    path = str(path)
    d = load_pickle(path, trust=trust, encoding="latin1")
    if not isinstance(d, dict) or any(k not in d for k in KEYS):
        have = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
        _fail(path, f"not an ACT ground-truth pickle: need keys {list(KEYS)}, found {have}")
    try:
        return _parse(path, d, keep_dtype)
    except TubeFormatError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:  # e.g. a list where a dict goes
        raise TubeFormatError(f"{path}: not an ACT ground-truth pickle ({type(e).__name__}: {e})") from None


def _parse(path: str, d: dict, keep_dtype: bool = False) -> TubeGT:
    labels = [str(x) for x in d["labels"]]
    nframes = {str(v): int(n) for v, n in d["nframes"].items()}
    resolution = {}
    for v, hw in d["resolution"].items():
        if len(hw) != 2 or min(int(hw[0]), int(hw[1])) < 1:
            _fail(path, f"video {v}: resolution must be (height, width), got {hw!r}")
        resolution[str(v)] = (int(hw[0]), int(hw[1]))
    tubes: dict[str, list[tuple[int, np.ndarray]]] = {}
    for v, by_label in d["gttubes"].items():
        v = str(v)
        if v not in nframes or v not in resolution:
            _fail(path, f"video {v}: has tubes but no nframes/resolution entry")
        out = []
        for label in sorted(by_label):
            if not 0 <= int(label) < len(labels):
                _fail(path, f"video {v}: label index {label} outside 0..{len(labels) - 1}")
            for j, t in enumerate(by_label[label]):
                t = np.asarray(t)
                t = t if keep_dtype and t.dtype in (np.float32, np.float64) else t.astype(np.float64)
                if t.ndim != 2 or t.shape[1] != 5 or len(t) == 0:
                    _fail(path, f"video {v}: tube {j} of label {label} must be a non-empty (n, 5) array, "
                                f"got shape {t.shape}")
                f = t[:, 0]
                if (f != np.round(f)).any() or f.min() < 1 or f.max() > nframes[v] or (np.diff(f) <= 0).any():
                    _fail(path, f"video {v}: tube {j} of label {label}: frame numbers must be increasing "
                                f"integers in 1..{nframes[v]}")
                if not np.isfinite(t).all() or (t[:, 3] < t[:, 1]).any() or (t[:, 4] < t[:, 2]).any():
                    _fail(path, f"video {v}: tube {j} of label {label}: boxes need x1 <= x2 and y1 <= y2")
                out.append((int(label), t))
        tubes[v] = out
    splits = {}
    for key in ("train_videos", "test_videos"):
        lists = [[str(v) for v in s] for s in d[key]]
        for s in lists:
            for v in s:
                if v not in tubes:
                    _fail(path, f"{key}: video {v} has no gttubes entry")
        splits[key] = lists
    return TubeGT(path, labels, tubes, nframes, splits["train_videos"], splits["test_videos"], resolution)


_SPLIT = re.compile(r"^(train|test)(\d+)$")


def parse_split(name: str) -> tuple[str, int]:
    """`train1` -> ("train", 1); the store split names of these datasets."""
    m = _SPLIT.match(name)
    if m is None:
        raise TubeFormatError(f"split {name!r}: tube datasets name splits train<N> / test<N> (e.g. train1)")
    return m.group(1), int(m.group(2))


def split_name(split: str, side: str | None) -> str:
    """The store split name from `--split` and `--side`: "1" with side "train" -> "train1"; a full
    name ("test2") as given (`side`, if given, must agree). Refuses anything `parse_split` does not read."""
    if split.isdigit():
        if side is None:
            raise TubeFormatError(f"split {split} needs a side: train or test (e.g. --side train)")
        split = f"{side}{split}"
    named = parse_split(split)[0]
    if side is not None and named != side:
        raise TubeFormatError(f"split {split} is a {named} split, but the side given is {side}")
    return split


def frame_timestamp(frame, fps: float):
    """Frame number(s) (1-based) -> seconds; inverse of `timestamp_frame`."""
    return (np.asarray(frame, dtype=np.float64) - 1.0) / fps


def timestamp_frame(ts, fps: float) -> np.ndarray:
    return np.round(np.asarray(ts, dtype=np.float64) * fps).astype(np.int64) + 1


def to_annotations(gt: TubeGT, videos: list[str], *, fps: float, frame_stride: int = 1) -> ava_io.Annotations:
    """One annotation row per (tube, keyframe) of `videos` (see the module doc for the choices)."""
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    cols: dict[str, list] = {"video": [], "timestamp": [], "box": [], "action": [], "person": []}
    for v in videos:
        h, w = gt.resolution[v]
        scale = np.array([w, h, w, h], np.float64)
        for track, (label, t) in enumerate(gt.tubes[v]):
            keep = (t[:, 0].astype(np.int64) - 1) % frame_stride == 0
            t = t[keep]
            cols["video"].append(np.full(len(t), v, dtype=object))
            cols["timestamp"].append(frame_timestamp(t[:, 0], fps))
            cols["box"].append(np.clip(t[:, 1:5] / scale, 0.0, 1.0))
            cols["action"].append(np.full(len(t), label + 1, np.int64))
            cols["person"].append(np.full(len(t), track, np.int64))
    cat = {k: (np.concatenate(v) if v else None) for k, v in cols.items()}
    if cat["video"] is None:
        return ava_io.Annotations(video=np.zeros(0, object), timestamp=np.zeros(0), box=np.zeros((0, 4), np.float32),
                                  action=np.zeros(0, np.int64), person=np.zeros(0, np.int64))
    return ava_io.Annotations(video=cat["video"], timestamp=cat["timestamp"], box=cat["box"].astype(np.float32),
                              action=cat["action"], person=cat["person"])


def find_tube_videos(root: str | Path, spec: TubeDatasetSpec, videos: list[str]) -> dict[str, tuple[Path, float]]:
    """video -> (frame folder or video file, time offset 0) for the videos found under `root`.

    Looked up in order: `<root>/<frame_dir>/<video>/`, `<root>/<video>/` (root is the frame
    folder itself), then `<root>/<video>.<ext>` and `<root>/videos/<video>.<ext>`. Videos not
    found are left out (extraction lists them as missing).
    """
    root = Path(root)
    out: dict[str, tuple[Path, float]] = {}
    for v in videos:
        for d in (root / spec.frame_dir / v, root / v):
            if d.is_dir():
                out[v] = (d, 0.0)
                break
        else:
            for base in (root / d for d in spec.video_dirs):
                files = [base / f"{v}{ext}" for ext in VIDEO_EXTENSIONS if (base / f"{v}{ext}").is_file()]
                if files:
                    out[v] = (files[0], 0.0)
                    break
    return out


def check_dataset(gt: TubeGT, dataset: str) -> None:
    """Refuse a pickle of the other dataset (JHMDB-21 has 3 splits, UCF101-24 one): its frame rate
    would be applied silently. Another split count (a hand-made subset): a warning of what is assumed."""
    import warnings

    spec = dataset_spec(dataset)
    n = len(gt.test_videos)
    if n == spec.splits:
        return
    other = [s.name for s in TUBE_DATASETS.values() if s.splits == n]
    if other:
        raise TubeFormatError(f"{gt.path}: has {n} split(s), like a {other[0]} pickle; --dataset {dataset} has "
                              f"{spec.splits} (its frame rate, {spec.fps:g} fps, would turn timestamps into other frames)")
    warnings.warn(f"{gt.path}: has {n} split(s), {dataset} has {spec.splits}: evaluated as {dataset} "
                  f"({spec.fps:g} fps)", stacklevel=2)


def check_tube_videos(gt: TubeGT, found: dict[str, tuple[Path, float]], spec: TubeDatasetSpec) -> None:
    """A frame folder must hold frames 1..nframes of the pickle, and its frames the pickle's
    (height, width): else its boxes and frame numbers would be applied to other pixels / frames."""
    from PIL import Image

    for v, (path, _) in found.items():
        if not Path(path).is_dir():
            continue  # a video file: its reader checks its own frames
        n = gt.nframes[v]
        last = Path(path) / spec.frame_name.format(n)
        if not last.is_file() or (Path(path) / spec.frame_name.format(n + 1)).is_file():
            have = sum(1 for _ in Path(path).glob("*" + Path(spec.frame_name).suffix))
            raise TubeFormatError(f"{path}: video {v} has {have} frames, the GT pickle {gt.path} says {n}")
        with Image.open(Path(path) / spec.frame_name.format(1)) as im:
            w, h = im.size
        if (h, w) != tuple(gt.resolution[v]):
            raise TubeFormatError(f"{path}: video {v} frames are {h}x{w} (height x width), the GT pickle "
                                  f"{gt.path} says {gt.resolution[v][0]}x{gt.resolution[v][1]}")
