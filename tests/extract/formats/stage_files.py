"""Small files in exactly the layouts of STAGE's release (as the official data/ava_dataset.py reads
them), written by the tests; kept free of torch/pytest so import subprocesses start fast.

actors: {video: [{"time", "features", "boxes", "labels"}, ...]}; objects: {(video, time): {"features",
"boxes", "cls_prob"}}.
"""
from __future__ import annotations

import os

import h5py
import numpy as np

VIDEOS = ("-5KQ66BBWC4", "_145Aa_xkuE", "abc")  # AVA ids contain "_" and may start with "-"


def random_release(seed: int = 0, *, videos=VIDEOS, times=(902, 903, 1000), C: int = 8, D: int = 6,
                   n_cls: int = 5, tdims=(2, 3, 2), width: int = 81, min_actors: int = 0) -> tuple[dict, dict]:
    """Random actors (features (N, C, *tdims); empty tdims: (N, C)) and objects for every keyframe;
    some keyframes without actors or objects. Labels are 0/1 in columns 1..width-1 (0 background)."""
    rng = np.random.default_rng(seed)
    actors, objects = {}, {}
    for v in videos:
        actors[v] = []
        for t in times:
            n, o = int(rng.integers(min_actors, 4)), int(rng.integers(0, 4))
            xy = rng.random((n, 2)) * 0.5
            lab = (rng.random((n, width)) < 0.1).astype(np.float32)
            lab[:, 0] = 0
            actors[v].append({"time": t, "features": rng.standard_normal((n, C, *tdims)).astype(np.float32),
                              "boxes": np.concatenate([xy, xy + 0.4], 1).astype(np.float32), "labels": lab})
            oxy = rng.random((o, 2)) * 0.6
            p = rng.random((o, n_cls)).astype(np.float32)
            objects[v, t] = {"features": rng.standard_normal((o, D)).astype(np.float32),
                             "boxes": np.concatenate([oxy, oxy + 0.3], 1).astype(np.float32),
                             "cls_prob": p / p.sum(1, keepdims=True)}
    return actors, objects


def write_i3d(root: str, actors: dict) -> str:
    """ACTORS_DIR/<video>/<timestamp %04d>.h5 with features, boxes, labels."""
    for v, kfs in actors.items():
        os.makedirs(os.path.join(root, v), exist_ok=True)
        for kf in kfs:
            with h5py.File(os.path.join(root, v, "%04d.h5" % kf["time"]), "w") as f:
                for k in ("features", "boxes", "labels"):
                    f.create_dataset(k, data=kf[k])
    return root


def write_slowfast(path: str, actors: dict) -> str:
    """One .h5, group <video>_<timestamp %04d> with boxes, features (N, C), labels."""
    with h5py.File(path, "w") as f:
        for v, kfs in actors.items():
            for kf in kfs:
                g = f.create_group(f"{v}_%04d" % kf["time"])
                for k in ("boxes", "features", "labels"):
                    g.create_dataset(k, data=kf[k])
    return path


def write_objects(path: str, objects: dict) -> str:
    """Flat datasets <video>_<timestamp without leading zeros>_features / _boxes / _cls_prob."""
    with h5py.File(path, "w") as f:
        for (v, t), o in objects.items():
            for k in ("features", "boxes", "cls_prob"):
                f.create_dataset(f"{v}_{('%04d' % t).lstrip('0')}_{k}", data=o[k])
    return path


def synthetic_release(root: str, *, seed: int, split: str, n_videos: int, keyframes: int, actor_dim: int,
                      object_dim: int, first_video: int = 0) -> tuple[str, str]:
    """The feature-level synthetic world (extract/synthetic/store.py, GT boxes only) written in the
    I3D layout with objects: features (N, C, 2, 1, 1) whose mean over t, h, w is the world's
    feature, labels in 81 columns (column c = synthetic id c), cls_prob one-hot-ish on the class."""
    from stagecache.extract.synthetic import OBJECT_CLASSES, video_arrays

    actors, objects = {}, {}
    for i in range(first_video, first_video + n_videos):
        va = video_arrays(seed, split, i, keyframes, actor_dim=actor_dim, object_dim=object_dim, proposals=False)
        b = va["base"]
        ao = np.concatenate([[0], np.cumsum(va["actor_counts"])])
        oo = np.concatenate([[0], np.cumsum(va["object_counts"])])
        actors[va["video"]] = []
        for k, t in enumerate(va["timestamps"]):
            a0, a1, o0, o1 = ao[k], ao[k + 1], oo[k], oo[k + 1]
            f = va["pooled"][a0:a1]
            lab = np.zeros((a1 - a0, 81), np.float32)
            lab[:, 1:1 + b["actor_labels"].shape[1]] = b["actor_labels"][a0:a1]
            actors[va["video"]].append({"time": int(t), "boxes": b["actor_box"][a0:a1], "labels": lab,
                                        "features": np.stack([f - 0.25, f + 0.25], 2)[..., None, None]})
            prob = np.full((o1 - o0, 1 + len(OBJECT_CLASSES)), 0.02, np.float32)
            prob[np.arange(o1 - o0), 1 + b["object_class"][o0:o1]] = 0.9
            objects[va["video"], int(t)] = {"features": b["object_feature"][o0:o1], "boxes": b["object_box"][o0:o1],
                                            "cls_prob": prob}
    d = write_i3d(os.path.join(root, f"{split}_actors"), actors)
    return d, write_objects(os.path.join(root, f"{split}_objects.h5"), objects)
