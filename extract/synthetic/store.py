"""Feature-level synthetic store: the simulated world written straight into a feature store.

No video is rendered; features are drawn so that the label rules of `extract/synthetic/world.py`
hold and can only be recovered the way they are meant to be:
- actor feature = pose_scale * POSE_CODE[pose] + id_scale * identity[person] + noise * N(0, 1/D).
  POSE_CODE is a fixed random unit vector per pose (drawn from a constant seed, so train and val
  stores share it whatever their seeds); identity is a random unit vector per (video, person).
  The feature carries nothing about nearby objects, nearby actors or the previous pose: a linear
  head on it solves classes 1-3 (pose) but not 4-7 beyond what the current pose implies (class 7
  "get up" needs pose = stand now), while a head with proximity (boxes), object classes and
  temporal links (tracks) can.
- object feature = obj_scale * CLASS_CODE[class] + noise * N(0, 1/D_o).
- proposals (proposals=True): per keyframe, after the GT rows, one jittered copy of every GT box
  (`simulate_proposals`: score in (0.5, 1], the GT's labels, feature = GT feature + 0.3 * noise),
  plus false positives (score < 0.4, no labels, feature = a random unit vector + noise), as a val
  split's detections would be; `actor_is_gt` False and `actor_track` -1 on those rows.

Groups written: `base` (actor_box, actor_score, actor_is_gt, actor_labels in LABEL_IDS order,
actor_track = person_id for GT rows, object_box, object_class (index into OBJECT_CLASSES),
object_score = 1, object_feature) and the backbone group (`backbone`, default "synthetic") with
actor_pooled, plus `actor_roi`, `actor_temporal` and `kf_context` for the `levels` asked for
(drawn from the same scene by `extract/synthetic/levels.py`, from their own generator, so asking for
levels changes none of the other arrays). Every keyframe of the world is written (the world's excluded flags are ignored).
Generation is per video and vectorised (no per-actor Python loop), so AVA-sized stores (300 videos
x 900 keyframes, 2304-d actors) are practical; a rerun skips videos already committed.
"""
from __future__ import annotations

import numpy as np

from stagecache.extract.store.schema import LEVELS
from stagecache.extract.synthetic.scene import FIRST_KEYFRAME, OBJECT_CLASSES, POSES, simulate_video, split_code, video_name
from stagecache.extract.synthetic.world import GROUPS, LABEL_IDS, LABEL_NAMES, simulate_proposals, video_tables

CODE_SEED = 20240917  # fixed: pose / class codes must be identical across splits and seeds


def feature_codes(actor_dim: int, object_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, actor_dim) pose codes and (4, object_dim) class codes, unit rows, fixed for all seeds."""
    rng = np.random.default_rng([CODE_SEED, actor_dim, object_dim])
    pose = rng.standard_normal((len(POSES), actor_dim))
    cls = rng.standard_normal((len(OBJECT_CLASSES), object_dim))
    pose /= np.linalg.norm(pose, axis=1, keepdims=True)
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    return pose.astype(np.float32), cls.astype(np.float32)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def video_arrays(
    seed: int,
    split: str,
    index: int,
    keyframes_per_video: int,
    *,
    actor_dim: int = 64,
    object_dim: int = 32,
    proposals: bool = True,
    noise: float = 1.0,
    pose_scale: float = 1.0,
    id_scale: float = 0.5,
    obj_scale: float = 1.0,
    levels: tuple[str, ...] = (),
    grid: int = 16,
    context_size: int = 16,
    roi_size: int = 7,
    temporal_steps: int = 8,
    map_noise: float = 0.5,
) -> dict:
    """One video's store rows: {"video", "timestamps", "actor_counts", "object_counts", "base",
    "pooled", "levels"} with the base-group arrays, the (A, actor_dim) pooled features and the
    backbone arrays of `levels` ({"actor_roi", "actor_temporal", "kf_context"} subset)."""
    # torch (the levels' maps): imported when a video is made, not by `synth --help` (issue 32)
    from stagecache.extract.synthetic.levels import context_codes, context_level, roi_level, scene_maps, temporal_level

    v = simulate_video(seed, index, keyframes_per_video, split=split)
    tab = video_tables(v)
    T = keyframes_per_video
    pose_code, class_code = feature_codes(actor_dim, object_dim)
    rng = np.random.default_rng([int(seed), split_code(split), int(index), 4])
    sa = np.float32(noise / np.sqrt(actor_dim))
    so = np.float32(noise / np.sqrt(object_dim))

    identity = _unit(rng, v.num_actors, actor_dim)  # (Na, D)
    n_gt = tab["actor_kf"].shape[0]
    gt_feat = (pose_scale * pose_code[tab["actor_pose"]] + id_scale * identity[tab["actor_person"]]
               + sa * rng.standard_normal((n_gt, actor_dim), dtype=np.float32))  # (A_gt, D)
    kf = tab["actor_kf"]
    box = tab["actor_box"]
    score = np.ones(n_gt, np.float32)
    is_gt = np.ones(n_gt, bool)
    labels = tab["actor_labels"].astype(np.uint8)
    track = tab["actor_person"].astype(np.int64)
    feat = gt_feat
    lrng = np.random.default_rng([int(seed), split_code(split), int(index), 5])  # levels only
    gt_temporal = None
    if "temporal" in levels:
        gt_temporal = temporal_level(v, kf, tab["actor_person"], identity, pose_code, steps=temporal_steps,
                                     id_scale=id_scale, noise_scale=sa, rng=lrng)  # (A_gt, S, D)
    temporal = gt_temporal
    if proposals:
        p = simulate_proposals(seed, split, index, kf, box, T)
        src = p["source"]
        fp = src < 0
        n_p = src.shape[0]
        p_feat = np.empty((n_p, actor_dim), np.float32)
        p_feat[~fp] = gt_feat[src[~fp]] + 0.3 * sa * rng.standard_normal(
            (int((~fp).sum()), actor_dim), dtype=np.float32)
        p_feat[fp] = pose_scale * _unit(rng, int(fp.sum()), actor_dim) + sa * rng.standard_normal(
            (int(fp.sum()), actor_dim), dtype=np.float32)
        p_labels = np.where(fp[:, None], 0, labels[np.maximum(src, 0)]).astype(np.uint8)
        # GT rows first within each keyframe, then that keyframe's proposals (stable sort).
        all_kf = np.concatenate((kf, p["kf"]))
        order = np.argsort(all_kf, kind="stable")
        kf = all_kf[order]
        box = np.concatenate((box, p["box"]))[order]
        score = np.concatenate((score, p["score"]))[order]
        is_gt = np.concatenate((is_gt, np.zeros(n_p, bool)))[order]
        labels = np.concatenate((labels, p_labels))[order]
        track = np.concatenate((track, np.full(n_p, -1, np.int64)))[order]
        feat = np.concatenate((gt_feat, p_feat))[order]
        if gt_temporal is not None:
            p_temp = np.empty((n_p,) + gt_temporal.shape[1:], np.float32)
            p_temp[~fp] = gt_temporal[src[~fp]] + 0.3 * sa * lrng.standard_normal(
                (int((~fp).sum()),) + gt_temporal.shape[1:], dtype=np.float32)
            p_temp[fp] = (pose_scale * _unit(lrng, int(fp.sum()), actor_dim)[:, None, :]
                          + sa * lrng.standard_normal((int(fp.sum()),) + gt_temporal.shape[1:], dtype=np.float32))
            temporal = np.concatenate((gt_temporal, p_temp))[order]

    n_obj = tab["object_kf"].shape[0]
    obj_feat = (obj_scale * class_code[tab["object_class"]]
                + so * rng.standard_normal((n_obj, object_dim), dtype=np.float32))
    level_arrays = {}
    if temporal is not None:
        level_arrays["actor_temporal"] = temporal
    if "roi" in levels or "context" in levels:
        codes = obj_scale * context_codes(len(OBJECT_CLASSES), actor_dim)[tab["object_class"]]
        maps = scene_maps(T, grid, tab["actor_kf"], tab["actor_box"], gt_feat, tab["object_kf"],
                          tab["object_box"], codes, lrng, map_noise)  # (T, D, G, G)
        if "context" in levels:
            level_arrays["kf_context"] = context_level(maps, context_size)
        if "roi" in levels:
            level_arrays["actor_roi"] = roi_level(maps, kf, box, roi_size)
    base = {
        "actor_box": box.astype(np.float32), "actor_score": score, "actor_is_gt": is_gt,
        "actor_labels": labels, "actor_track": track,
        "object_box": tab["object_box"], "object_class": tab["object_class"].astype(np.int64),
        "object_score": np.ones(n_obj, np.float32), "object_feature": obj_feat,
    }
    return {
        "video": v.name,
        "timestamps": v.keyframe_times,
        "actor_counts": np.bincount(kf, minlength=T),
        "object_counts": np.bincount(tab["object_kf"], minlength=T),
        "base": base,
        "pooled": feat,
        "levels": level_arrays,
    }


def make_feature_store(
    path,
    *,
    split: str,
    seed: int,
    n_videos: int,
    keyframes_per_video: int,
    actor_dim: int = 64,
    object_dim: int = 32,
    backbone: str = "synthetic",
    proposals: bool = True,
    noise: float = 1.0,
    first_video: int = 0,
    levels: tuple[str, ...] | list[str] = (),
    context_size: int = 16,
    roi_size: int = 7,
    temporal_steps: int = 8,
    progress: bool = False,
):
    """Write a feature-level synthetic store at `path` (see the module docstring); returns `path`.

    `levels`: extra backbone levels to draw, a subset of ("roi", "temporal", "context")."""
    from stagecache.extract.store import StoreWriter

    for name, val, lo in (("n_videos", n_videos, 1), ("keyframes_per_video", keyframes_per_video, 1),
                          ("actor_dim", actor_dim, 1), ("object_dim", object_dim, 1),
                          ("first_video", first_video, 0)):
        if int(val) < lo:
            raise ValueError(f"{name} must be >= {lo}, got {val}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    levels = tuple(sorted(set(levels)))
    bad = sorted(set(levels) - set(LEVELS))
    if bad:
        raise ValueError(f"unknown level(s) {bad}; valid: {', '.join(LEVELS)}")
    for name, val in (("context_size", context_size), ("roi_size", roi_size), ("temporal_steps", temporal_steps)):
        if int(val) < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")
    if backbone == "base":
        raise ValueError("backbone group name 'base' is reserved")
    base_attrs = {
        "source": "synthetic", "seed": int(seed), "first_video": int(first_video),
        "keyframes_per_video": int(keyframes_per_video), "first_keyframe": FIRST_KEYFRAME,
        "proposals": bool(proposals), "groups": GROUPS, "object_feature_dim": int(object_dim),
        "noise": float(noise),
    }
    bb_attrs = {
        "backbone": backbone, "source": "synthetic", "feature_dim": int(actor_dim),
        "pooled_dim": int(actor_dim), "levels": ["pooled", *levels], "seed": int(seed), "noise": float(noise),
    }
    if "context" in levels:
        bb_attrs["context_grid"] = int(context_size)
    if "roi" in levels:
        bb_attrs["roi_size"] = int(roi_size)
    if "temporal" in levels:
        bb_attrs["temporal_steps"] = int(temporal_steps)
    videos = range(first_video, first_video + n_videos)
    if progress:
        from tqdm import tqdm
        videos = tqdm(videos, desc=f"synthetic store {split}", unit="video")
    with StoreWriter(str(path), split=split, label_ids=LABEL_IDS, label_names=LABEL_NAMES,
                     object_classes=OBJECT_CLASSES) as w:
        w.declare_group("base", base_attrs)
        w.declare_group(backbone, bb_attrs)
        done_base, done_bb = w.done("base"), w.done(backbone)
        for g in videos:
            name = video_name(g)
            if name in done_base and name in done_bb:
                continue  # rerun: committed already
            va = video_arrays(seed, split, g, keyframes_per_video, actor_dim=actor_dim,
                              object_dim=object_dim, proposals=proposals, noise=noise, levels=levels,
                              context_size=context_size, roi_size=roi_size, temporal_steps=temporal_steps)
            counts = dict(timestamps=va["timestamps"], actor_counts=va["actor_counts"],
                          object_counts=va["object_counts"])
            if name not in done_base:
                w.add_video("base", name, arrays=va["base"], **counts)
            if name not in done_bb:
                w.add_video(backbone, name, arrays={"actor_pooled": va["pooled"], **va["levels"]}, **counts)
    return path
