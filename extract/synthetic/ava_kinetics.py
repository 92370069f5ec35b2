"""Synthetic AVA-Kinetics in its real layout (extract/datasets/ava_kinetics.py), from the synthetic
AVA dataset (`video.make_video_dataset`): of each split's videos, the last `n_kinetics` become
Kinetics clips, each with one annotated keyframe (its first), as AVA-Kinetics' clips.

  videos/<video>.mp4                                   AVA videos (video time = timestamp - 900)
  videos/<id>_<start:06d>_<end:06d>.mp4                 Kinetics clips (clip time = timestamp - start)
  annotations/<split>.csv                              AVA rows (8 columns)
  annotations/kinetics_<split>.csv                      Kinetics rows: 7 columns (no person id), the
                                                       video's own seconds (the AVA rows' - 900 + start)
  annotations/<split>_proposals.pkl                     MMAction2's merged pickle {"<video>,<second:04d>": (n, 5)};
                                                       Kinetics keys at the keyframe and the seconds either side
  annotations/label_map.pbtxt                           as the AVA dataset's
A clip's frames are the AVA video's frames: features of a keyframe are those of its AVA twin.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from stagecache.extract import ava_io
from stagecache.extract.synthetic.video import make_video_dataset


def make_ava_kinetics_dataset(out_dir, *, seed: int = 0, n_videos: int = 3, n_kinetics: int = 2,
                              kinetics_start: int = 10, splits: tuple[str, ...] = ("train", "val"), **kwargs) -> Path:
    """Write the dataset (see the module doc) under `out_dir`; kwargs go to `make_video_dataset`."""
    if not 0 < n_kinetics < n_videos:
        raise ValueError("need 0 < n_kinetics < n_videos (AVA and Kinetics videos in every split)")
    out = make_video_dataset(out_dir, seed=seed, n_videos=n_videos, splits=splits, **kwargs)
    seconds = int(kwargs.get("seconds", 6))
    shift = kinetics_start - 900.0
    ann_dir = out / "annotations"
    lm = ava_io.read_label_map(ann_dir / "label_map.pbtxt")
    for split in splits:
        ann = ava_io.read_annotations(ann_dir / f"{split}.csv", lm)
        props = ava_io.read_proposals(ann_dir / f"{split}_proposals.csv")
        videos = sorted(set(np.asarray(ann.video).astype(str).tolist()))
        kin = set(videos[-n_kinetics:])
        for v in kin:
            (out / "videos" / f"{v}.mp4").rename(
                out / "videos" / f"{v}_{kinetics_start:06d}_{kinetics_start + seconds:06d}.mp4")
        is_kin = np.isin(np.asarray(ann.video).astype(str), list(kin))
        first = {v: ann.timestamp[np.asarray(ann.video).astype(str) == v].min() for v in kin}
        one = np.array([v in kin and t == first[v] for v, t in zip(np.asarray(ann.video).astype(str), ann.timestamp)])
        ava_io.write_annotations(ann_dir / f"{split}.csv", ava_io.Annotations(
            video=ann.video[~is_kin], timestamp=ann.timestamp[~is_kin], box=ann.box[~is_kin],
            action=ann.action[~is_kin], person=ann.person[~is_kin]))
        kin_csv = ann_dir / f"kinetics_{split}.csv"
        ava_io.write_annotations(kin_csv, ava_io.Annotations(
            video=ann.video[one], timestamp=ann.timestamp[one] + shift, box=ann.box[one],
            action=ann.action[one], person=ann.person[one]))
        # the release's 7 columns: no person id
        kin_csv.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in kin_csv.read_text().splitlines()))
        merged: dict[str, list] = {}
        for v, t, b, s in zip(np.asarray(props.video).astype(str), props.timestamp, props.box, props.score):
            if v in kin and t != first[v]:
                continue
            t = int(round(t + (shift if v in kin else 0)))
            for d in (-1, 0, 1) if v in kin else (0,):  # MMAction2's fetch_proposal.py: the seconds around too
                merged.setdefault(f"{v},{t + d:04d}", []).append([*b, s])
        (ann_dir / f"{split}_proposals.pkl").write_bytes(
            pickle.dumps({k: np.array(r, np.float64) for k, r in merged.items()}, protocol=4))
    return out


__all__ = ["make_ava_kinetics_dataset"]
