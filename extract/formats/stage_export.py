"""Export of a store in the layouts of STAGE's release (see `extract/formats/stage_release.py`), so the
official code (aimagelab/STAGE_action_detection) reads a store made by `extract features`.

- `stage-i3d`: `OUT_DIR/<video>/<timestamp %04d>.h5` with `features` (N, C, 1, 1, 1) float32 (the
  official model's mean over t, h, w gives back the pooled feature), `boxes` (N, 4), `labels`
  (N, 81) float32 with column 0 background (0 here) and column c = id c.
- `stage-slowfast`: one .h5, group `<video>_<timestamp %04d>` with `boxes`, `features` (N, C),
  `labels` as above.
- objects (optional, needs `base/object_feature`): `<video>_<timestamp without leading zeros>_features`
  (O, D) float32, `_boxes`, `_cls_prob` (O, 1 + classes): the stored class gets its score, the
  background column 1 - score, the others 0, so the import's argmax gives back class and score.

Export then import (with the store's label map) is the identity on every exported array, except
the class of an object whose score is 0 (its cls_prob row is then background only). Timestamps are
written `%04d` when whole (AVA); a fractional one (JHMDB / UCF stores) is written as its repr, which
the official loader, made for AVA, cannot parse.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from stagecache.core.atomic import atomic_path
from stagecache.extract.ava_io import format_timestamp
from stagecache.extract.formats.stage_release import StageReleaseError
from stagecache.extract.store import open_store


def feature_groups(st) -> list[str]:
    return [g for g in st.fragments if g != "base" and "actor_pooled" in st.array_info(g)]


def _pick_backbone(st, backbone: str | None) -> str:
    groups = feature_groups(st)
    if backbone is None:
        if len(groups) != 1:
            raise StageReleaseError(f"{st.path}: pick the backbone to export with --backbone; candidates: {groups}")
        return groups[0]
    if backbone not in groups:
        raise StageReleaseError(f"{st.path}: no group {backbone!r} with actor_pooled; candidates: {groups}")
    return backbone


def _label_width(label_ids: list[int]) -> int:
    """81 columns for AVA ids (<= 80), more when a label map has larger ids."""
    bad = [i for i in label_ids if i < 1]
    if bad:
        raise StageReleaseError(f"label ids {bad} cannot be written with column 0 = background, column c = id c")
    return max(81, max(label_ids, default=0) + 1)


def export_release(path: str, out: str, *, layout: str, backbone: str | None = None,
                   objects: str | None = None) -> dict:
    """Write the store at `path` as `layout` to `out` (a directory for stage-i3d, an .h5 for
    stage-slowfast) and, with `objects`, the objects file. Returns counts written."""
    import h5py

    if layout not in ("stage-i3d", "stage-slowfast"):
        raise StageReleaseError(f"unknown layout {layout!r}; valid: stage-i3d, stage-slowfast")
    st = open_store(path)
    backbone = _pick_backbone(st, backbone)
    base = ["actor_box", "actor_labels"]
    if objects:
        if "object_feature" not in st.array_info("base"):
            raise StageReleaseError(f"{path}: group base has no object_feature array, so there are no object "
                                    "features to export (extract objects with a feature detector first)")
        base += ["object_box", "object_class", "object_score", "object_feature"]
    t = st.load({"base": base, backbone: ["actor_pooled"]})
    d = {k.split("/", 1)[1]: v.numpy() for k, v in t.data.items()}
    ids = [int(i) for i in st.attrs["label_ids"]]
    labels = np.zeros((len(d["actor_labels"]), _label_width(ids)), np.float32)
    labels[:, ids] = d["actor_labels"]
    feat = d["actor_pooled"].astype(np.float32)
    ao, oo = t.kf_actor_offset.numpy(), t.kf_object_offset.numpy()
    n_cls = len(st.attrs.get("object_classes") or []) + 1
    def h5_atomic(stack, p):
        # written under a temporary name, renamed when complete: a killed or failed export never
        # leaves a truncated file under the final name (core/atomic.py)
        return stack.enter_context(h5py.File(stack.enter_context(atomic_path(p)), "w"))

    with contextlib.ExitStack() as stack:
        if layout == "stage-i3d":
            os.makedirs(out, exist_ok=True)
            actors = None
        else:
            actors = h5_atomic(stack, out)
        objs = h5_atomic(stack, objects) if objects else None
        for k in range(st.num_keyframes):
            video, stamp = t.video_names[int(t.kf_video[k])], format_timestamp(float(t.kf_time[k]))
            a, b = ao[k], ao[k + 1]
            if actors is None:
                os.makedirs(os.path.join(out, video), exist_ok=True)
                with contextlib.ExitStack() as kf_stack:
                    g = h5_atomic(kf_stack, os.path.join(out, video, f"{stamp}.h5"))
                    g.create_dataset("features", data=feat[a:b, :, None, None, None])  # (N, C, t, h, w)
                    g.create_dataset("boxes", data=d["actor_box"][a:b])
                    g.create_dataset("labels", data=labels[a:b])
            else:
                g = actors.create_group(f"{video}_{stamp}")
                g.create_dataset("boxes", data=d["actor_box"][a:b])
                g.create_dataset("features", data=feat[a:b])
                g.create_dataset("labels", data=labels[a:b])
            if objs is not None:
                o0, o1 = oo[k], oo[k + 1]
                cls, score = d["object_class"][o0:o1], d["object_score"][o0:o1].astype(np.float32)
                if len(cls) and (cls.min() < 0 or cls.max() >= n_cls - 1):
                    raise StageReleaseError(f"{path}: base/object_class of video {video} at {stamp} outside the "
                                            f"store's {n_cls - 1} object classes")
                prob = np.zeros((o1 - o0, n_cls), np.float32)
                prob[:, 0] = 1.0 - score
                prob[np.arange(o1 - o0), cls + 1] = score
                prefix = f"{video}_{stamp.lstrip('0')}"  # the official loader strips leading zeros
                objs.create_dataset(f"{prefix}_features", data=d["object_feature"][o0:o1].astype(np.float32))
                objs.create_dataset(f"{prefix}_boxes", data=d["object_box"][o0:o1])
                objs.create_dataset(f"{prefix}_cls_prob", data=prob)
    return {"videos": len(st.videos), "keyframes": st.num_keyframes, "actors": st.num_actors,
            "objects": st.num_objects if objects else 0, "backbone": backbone}
