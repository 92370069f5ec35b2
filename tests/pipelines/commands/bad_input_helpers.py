"""Tiny stores and files for the error-path tests (test_preflight.py, test_bad_inputs.py)."""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np

from stagecache.extract.store import StoreWriter

LABEL_IDS = [1, 2, 3]
LABEL_NAMES = ["stand", "sit", "walk"]


def write_store(path, *, split="train", videos=("va", "vb"), dim=8, group="feat", levels=(),
                label_names=LABEL_NAMES, nan_at: tuple[str, str, int] | None = None, scores=None) -> str:
    """A store of `videos` x 2 keyframes x 2 actors (one GT, one proposal) x 1 object; `group`
    holds actor_pooled (A, dim) and `levels` (actor_roi / actor_temporal / kf_context);
    `nan_at=(video, array, row within the video)` puts a NaN there."""
    w = StoreWriter(str(path), split=split, label_ids=LABEL_IDS, label_names=list(label_names),
                    object_classes=["cup"], flush_bytes=1 << 20)
    w.declare_group("base", {})
    w.declare_group(group, {"backbone": group})
    for vi, v in enumerate(videos):
        rng = np.random.default_rng(vi)
        ts, ac, oc = np.array([902.0, 903.0]), np.array([2, 2]), np.array([1, 1])
        xy = rng.random((4, 2)) * 0.5
        base = dict(actor_box=np.concatenate([xy, xy + 0.3], 1), actor_score=np.asarray(scores or [1.0, 0.9] * 2),
                    actor_is_gt=np.array([True, False] * 2), actor_labels=rng.integers(0, 2, (4, len(LABEL_IDS))),
                    actor_track=np.full(4, -1), object_box=np.tile([[0.1, 0.1, 0.2, 0.2]], (2, 1)),
                    object_class=np.zeros(2, np.int64), object_score=np.ones(2))
        feat = {"actor_pooled": rng.standard_normal((4, dim))}
        shapes = {"actor_roi": (4, dim, 2, 2), "actor_temporal": (4, 2, dim), "kf_context": (2, dim, 2, 2)}
        for lv in levels:
            feat[lv] = rng.standard_normal(shapes[lv])
        if nan_at is not None and nan_at[0] == v:
            (feat if nan_at[1] in feat else base)[nan_at[1]][nan_at[2]] = np.nan
        w.add_video("base", v, timestamps=ts, actor_counts=ac, object_counts=oc, arrays=base)
        w.add_video(group, v, timestamps=ts, actor_counts=ac, object_counts=oc, arrays=feat)
    w.close()
    return str(path)


class RunsCode:
    """Unpickling it runs `open(marker, "w")`: what a hostile data file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def write_pickle(path, obj) -> str:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return str(path)


def snapshot(root) -> dict[str, str]:
    """Every directory and file under `root`, files by content hash: a failed command must leave it equal."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = "dir"
        for n in filenames:
            out[os.path.join(rel, n)] = hashlib.sha256(Path(dirpath, n).read_bytes()).hexdigest()
    return out
