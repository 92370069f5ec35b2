"""MultiSports (MCG-NJU/MultiSports, ICCV 2021): its GT pickle and person-box pickles as `extract
features` / `evaluate` inputs.

`multisports_GT.pkl` has the ACT layout `tubes_pkl` reads (keys labels, gttubes, nframes,
train_videos, test_videos, resolution; one split; video = `<sport>/<clip>`, e.g.
`aerobic_gymnastics/v_crsi07chcV8_c004`; tubes (n, 5) frame (1-based), x1, y1, x2, y2 in pixels),
read through `core.safe_pickle` with the tubes kept in their own float type (its evaluator computes
tube areas in it). 66 labels; `NOT_EVALUATED` names the six its evaluator skips.

Frames: 25 fps, frame k = `<root>/rawframes/<video>/{k:05d}.jpg` (MMAction2's `filename_tmpl`
'{:05}.jpg', start 1), or the released videos `<root>/{trainval,test}/<video>.mp4`.

Person boxes (`MultiSports_box/*.pkl`, README "Download Person Boxes"): `{"<clip>,<frame>": (n, 5)
x1, y1, x2, y2 normalised, score}` with frame from 1; MMAction2's `tools/data/multisports/parse_anno.py`
rewrites the keys to `"<sport>/<clip>.mp4,<frame:04d>"`. Both are read: the video part is matched
to the GT's names with or without the sport folder and `.mp4`. Keyframe timestamp = (frame - 1) /
fps, as every tube dataset here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stagecache.core.safe_pickle import load_pickle
from stagecache.core.timekeys import timestamp_keys
from stagecache.extract import ava_io
from stagecache.extract.datasets.tubes_pkl import TubeFormatError, TubeGT, frame_timestamp, read_tube_pickle

FPS = 25.0
# the labels evaluate_multisports.py leaves out of frame-AP and video-AP (too few test instances)
NOT_EVALUATED = ("aerobic kick jump", "aerobic off axis jump", "aerobic butterfly jump", "aerobic balance turn",
                 "basketball save", "basketball jump ball")


def read_multisports_gt(path: str | Path, *, trust: bool = False) -> TubeGT:
    """Read and validate `multisports_GT.pkl` (a tube outside its video's frames: one-line error)."""
    gt = read_tube_pickle(path, trust=trust, keep_dtype=True)
    if len(gt.test_videos) != 1 or len(gt.train_videos) != 1:
        raise TubeFormatError(f"{path}: MultiSports has one split, the file has {len(gt.test_videos)}")
    return gt


def evaluated_labels(labels: list[str]) -> np.ndarray:
    """(n_labels,) bool: the classes MultiSports' evaluator scores."""
    return np.array([name not in NOT_EVALUATED for name in labels], bool)


def _video_names(videos: list[str]) -> dict[str, str]:
    """Every spelling a box file uses for a GT video -> the GT name."""
    out: dict[str, str] = {}
    for v in videos:
        clip = v.rsplit("/", 1)[-1]
        for name in (v, v + ".mp4", clip, clip + ".mp4"):
            out.setdefault(name, v)
    return out


def read_multisports_boxes(path: str | Path, videos: list[str], *, fps: float = FPS, trust: bool = False,
                           keyframes: ava_io.Annotations | None = None) -> ava_io.Proposals:
    """A MultiSports person-box pickle (either key spelling, see the module doc) -> proposals of
    `videos` (GT names) at timestamp (frame - 1) / fps; keys of other videos are left out, and with
    `keyframes` (the GT rows extraction stores) those of frames without a GT row: the frames
    MultiSports annotates are the ones its models are run and scored on (MMAction2's samples)."""
    path = str(path)
    data = load_pickle(path, trust=trust, encoding="latin1")
    if not isinstance(data, dict):
        raise TubeFormatError(f"{path}: expected a dict '<video>,<frame>' -> (n, 5) array, got {type(data).__name__}")
    names = _video_names(videos)
    vids, frames, boxes, scores = [], [], [], []
    for k, arr in data.items():
        video, _, frame = str(k).rpartition(",")
        try:
            f = int(frame.strip())
        except ValueError:
            raise TubeFormatError(f"{path}: key {k!r} is not '<video>,<frame>'") from None
        if f < 1:
            raise TubeFormatError(f"{path}: key {k!r}: frame numbers start at 1")
        v = names.get(video.strip())
        if v is None:
            continue
        try:
            a = np.asarray(arr, dtype=np.float64).reshape(len(arr), -1) if len(arr) else np.zeros((0, 5))
        except (TypeError, ValueError):
            raise TubeFormatError(f"{path}: key {k!r}: not a numeric (n, 5) array") from None
        if a.shape[1] not in (4, 5) or not np.isfinite(a).all():
            raise TubeFormatError(f"{path}: key {k!r}: expected a finite (n, 5) or (n, 4) array, got {a.shape}")
        vids += [v] * len(a)
        frames.append(np.full(len(a), f, np.int64))
        boxes.append(np.clip(a[:, :4], 0.0, 1.0))
        scores.append(a[:, 4] if a.shape[1] == 5 else np.ones(len(a)))
    if not vids:
        return ava_io.Proposals(np.zeros(0, str), np.zeros(0), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    out = ava_io.Proposals(np.array(vids, dtype=str), frame_timestamp(np.concatenate(frames), fps),
                           np.concatenate(boxes), np.concatenate(scores))
    if keyframes is not None:
        have = set(zip(np.asarray(keyframes.video).astype(str).tolist(), timestamp_keys(keyframes.timestamp).tolist()))
        keep = np.array([k in have for k in zip(out.video.tolist(), timestamp_keys(out.timestamp).tolist())], bool)
        out = ava_io.Proposals(out.video[keep], out.timestamp[keep], out.box[keep], out.score[keep])
    return out
