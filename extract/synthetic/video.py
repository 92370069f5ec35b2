"""Rendering and AVA-format files of the synthetic video dataset (`make_video_dataset`).

Layout written under `out_dir`:
    videos/<vid>.mp4                          PyAV-encoded (codec `mpeg4` by default)
    annotations/<split>.csv                   AVA GT, one row per (box, action), with person_id
    annotations/<split>_proposals.csv         person proposals with scores (PySlowFast layout)
    annotations/<split>_objects.csv           GT object boxes, class ids of OBJECT_CLASSES, score 1
    annotations/<split>_excluded_timestamps.csv
    annotations/label_map.pbtxt               7 classes, `name` / `id` form
    annotations/groups.json                   class groups for the evaluator
    dataset.json                              fps, size, timing, splits, file paths

Timing (also in dataset.json): decoded frame i (`frame.time` = i / fps) shows AVA second
900 + i / fps, i.e. video time (s) = AVA timestamp - 900 and the keyframe at AVA timestamp t is
frame (t - 900) * fps exactly. Videos are `seconds` long; keyframes are 902, ..., 900 + seconds - 2.

Appearance: a textured background (per video); each actor a filled rectangle whose colour encodes
its pose (stand red, sit green, lie blue; the box aspect follows the pose too) with a border in a
per-actor identity colour; objects are small filled rectangles, one colour per class (cup white,
bike yellow, phone black, chair brown), drawn over actors. An actor dropped out at keyframe t is
not drawn on the frames nearest t (round(time) == t).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stagecache.core.atomic import atomic_path
from stagecache.extract import ava_io
from stagecache.extract.synthetic.scene import FIRST_KEYFRAME, OBJECT_CLASSES, VIDEO_START, VideoSim, keyframes_for, split_code
from stagecache.extract.synthetic.world import (GROUPS, LABEL_IDS, LABEL_NAMES, R_ACT, R_OBJ, World, simulate_proposals,
                                     simulate_world)

POSE_COLOURS = np.array([[210, 50, 50], [50, 190, 60], [50, 80, 230]], dtype=np.uint8)
OBJECT_COLOURS = np.array([[245, 245, 245], [235, 215, 30], [15, 15, 15], [140, 85, 35]], dtype=np.uint8)
VIDEO_CODECS = ("mpeg4", "libx264", "mjpeg")


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 smooth colour field plus fine static grain."""
    coarse = rng.uniform(70, 150, (6, 8, 3))
    ys = np.linspace(0, coarse.shape[0] - 1, height)
    xs = np.linspace(0, coarse.shape[1] - 1, width)
    y0 = np.minimum(ys.astype(int), coarse.shape[0] - 2)
    x0 = np.minimum(xs.astype(int), coarse.shape[1] - 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bot = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    img = top * (1 - fy) + bot * fy + rng.normal(0, 6, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _pixel_boxes(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 4) normalised -> (..., 4) int pixel x1, y1, x2, y2 (exclusive end, at least 1 px)."""
    px = np.rint(box * np.array([width, height, width, height])).astype(np.int64)
    px[..., 2] = np.maximum(px[..., 2], px[..., 0] + 1)
    px[..., 3] = np.maximum(px[..., 3], px[..., 1] + 1)
    return px


def render_frames(v: VideoSim, *, seed: int, split: str, index: int, fps: int, width: int,
                  height: int):
    """Yield the (H, W, 3) uint8 RGB frames of one video (frame i at AVA second 900 + i / fps)."""
    rng = np.random.default_rng([int(seed), split_code(split), int(index), 3])
    bg = _background(rng, height, width)
    identity = rng.integers(0, 256, (v.num_actors, 3)).astype(np.uint8)
    n = v.seconds * fps
    times = VIDEO_START + np.arange(n) / fps
    abox = _pixel_boxes(v.actor_boxes(v.actor_centres(times), v.poses_at(times)), width, height)
    poses = v.poses_at(times)  # (F, Na)
    obox = _pixel_boxes(v.object_boxes(v.object_centres(times)), width, height)
    # Drop-out: hidden on the frames nearest a keyframe where the actor is absent.
    kf_idx = np.floor(times + 0.5).astype(np.int64) - FIRST_KEYFRAME
    visible = np.ones((n, v.num_actors), dtype=bool)
    in_kf = (kf_idx >= 0) & (kf_idx < v.present.shape[0])
    visible[in_kf] = v.present[kf_idx[in_kf]]
    for f in range(n):
        img = bg.copy()
        for a in range(v.num_actors):  # rendering only: a handful of shapes per frame
            if not visible[f, a]:
                continue
            x1, y1, x2, y2 = abox[f, a]
            img[y1:y2, x1:x2] = identity[a]
            img[y1 + 2:y2 - 2, x1 + 2:x2 - 2] = POSE_COLOURS[poses[f, a]]
        for o in range(v.num_objects):
            x1, y1, x2, y2 = obox[f, o]
            img[y1:y2, x1:x2] = OBJECT_COLOURS[v.object_class[o]]
        yield img


def write_video(path, frames, *, fps: int, width: int, height: int, codec: str = "mpeg4") -> int:
    """Encode RGB frames with PyAV (pts = frame index, time base 1 / fps); returns the frame count."""
    import av
    from fractions import Fraction

    if codec not in av.codecs_available:
        raise ValueError(f"codec {codec!r} is not available in this PyAV build; try one of "
                         f"{[c for c in VIDEO_CODECS if c in av.codecs_available]}")
    n = 0
    # Atomic: never leave a half-written video under the final name.
    with atomic_path(path) as tmp, av.open(tmp, "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.bit_rate = 2_000_000
        stream.time_base = Fraction(1, fps)
        stream.thread_count = 1  # single-threaded encoding keeps the output byte-identical
        for img in frames:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = n
            out.mux(stream.encode(frame))
            n += 1
        out.mux(stream.encode(None))
    return n


def _rows_of_split(world: World, *, seed: int, split: str, first_video: int):
    """AVA tables (annotations, proposals, objects, excluded pairs) of one simulated split."""
    vid = np.asarray(world.video_names)
    a_kf = world.actor_kf
    keep = ~world.kf_excluded[a_kf]
    r, j = np.nonzero(world.actor_labels & keep[:, None])  # row-major: per actor, ids ascending
    ann = ava_io.Annotations(
        video=vid[world.kf_video[a_kf[r]]], timestamp=world.kf_time[a_kf[r]],
        box=world.actor_box[r], action=np.asarray(LABEL_IDS)[j], person=world.actor_person[r])

    T = len(world.videos[0].keyframe_times)
    p_vid, p_kf, p_box, p_score = [], [], [], []
    for i in range(len(world.videos)):
        rows = np.nonzero(world.kf_video[a_kf] == i)[0]
        p = simulate_proposals(seed, split, first_video + i, a_kf[rows] - i * T,
                               world.actor_box[rows], T)
        p_vid.append(np.full(len(p["kf"]), world.video_names[i]))
        p_kf.append(p["kf"] + i * T), p_box.append(p["box"]), p_score.append(p["score"])
    kf = np.concatenate(p_kf)
    props = ava_io.Proposals(video=np.concatenate(p_vid), timestamp=world.kf_time[kf],
                             box=np.concatenate(p_box), score=np.concatenate(p_score))
    objs = ava_io.Objects(
        video=vid[world.kf_video[world.object_kf]], timestamp=world.kf_time[world.object_kf],
        box=world.object_box, class_id=world.object_class,
        score=np.ones(world.num_objects, np.float32))
    ex = np.nonzero(world.kf_excluded)[0]
    excluded = [(world.video_names[world.kf_video[k]], float(world.kf_time[k])) for k in ex]
    return ann, props, objs, excluded


def write_label_files(ann_dir) -> tuple[Path, Path]:
    """label_map.pbtxt and groups.json of the synthetic classes."""
    ann_dir = Path(ann_dir)
    ann_dir.mkdir(parents=True, exist_ok=True)
    lm = ann_dir / "label_map.pbtxt"
    ava_io.write_label_map(lm, ava_io.LabelMap(ids=LABEL_IDS, names=LABEL_NAMES))
    groups = ann_dir / "groups.json"
    groups.write_text(json.dumps(GROUPS, indent=2) + "\n")
    # Object class names, one per line in class-id order (extract features --object-classes).
    (ann_dir / "object_classes.txt").write_text("".join(f"{c}\n" for c in OBJECT_CLASSES))
    return lm, groups


def make_video_dataset(
    out_dir,
    *,
    seed: int = 0,
    n_videos: int = 2,
    seconds: int = 6,
    fps: int = 30,
    width: int = 160,
    height: int = 120,
    splits: tuple[str, ...] = ("train", "val"),
    codec: str = "mpeg4",
) -> Path:
    """Render a small synthetic AVA-format dataset (see the module docstring); returns `out_dir`.

    Split j holds `n_videos` videos named from index j * n_videos (train syn_000.., val after).
    """
    if seconds < 4:
        raise ValueError(f"seconds must be >= 4 (2 s of video around the keyframes), got {seconds}")
    if n_videos < 1:
        raise ValueError(f"n_videos must be >= 1, got {n_videos}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"width and height must be even and >= 16, got {width}x{height}")
    if not splits or len(set(splits)) != len(splits):
        raise ValueError(f"splits must be distinct names, got {splits}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    ann_dir = out / "annotations"
    lm, groups = write_label_files(ann_dir)
    K = keyframes_for(seconds)
    info_splits = {}
    for j, split in enumerate(splits):
        first = j * n_videos
        world = simulate_world(seed, n_videos, K, split=split, first_video=first)
        for i, v in enumerate(world.videos):
            write_video(out / "videos" / f"{v.name}.mp4",
                        render_frames(v, seed=seed, split=split, index=first + i, fps=fps,
                                      width=width, height=height),
                        fps=fps, width=width, height=height, codec=codec)
        ann, props, objs, excluded = _rows_of_split(world, seed=seed, split=split, first_video=first)
        files = {
            "annotations": f"annotations/{split}.csv",
            "proposals": f"annotations/{split}_proposals.csv",
            "objects": f"annotations/{split}_objects.csv",
            "excluded": f"annotations/{split}_excluded_timestamps.csv",
        }
        ava_io.write_annotations(out / files["annotations"], ann)
        ava_io.write_proposals_csv(out / files["proposals"], props)
        ava_io.write_objects(out / files["objects"], objs)
        ava_io.write_excluded(out / files["excluded"], excluded)
        info_splits[split] = {"videos": world.video_names, **files}
    info = {
        "generator": "stagecache.extract.synthetic.make_video_dataset",
        "seed": seed,
        "fps": fps,
        "width": width,
        "height": height,
        "seconds": seconds,
        "num_frames": seconds * fps,
        "codec": codec,
        "video_start": VIDEO_START,
        "time_formula": "video_seconds = ava_timestamp - 900; decoded frame i (frame.time = i / fps) "
                        "is at AVA second 900 + i / fps",
        "first_keyframe": FIRST_KEYFRAME,
        "keyframes_per_video": K,
        "keyframe_times": [float(FIRST_KEYFRAME + k) for k in range(K)],
        "videos_dir": "videos",
        "video_ext": ".mp4",
        "label_map": "annotations/label_map.pbtxt",
        "groups": "annotations/groups.json",
        "object_classes": OBJECT_CLASSES,
        "rules": {"r_obj": R_OBJ, "r_act": R_ACT, "distance": "box centres, normalised coordinates"},
        "splits": info_splits,
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return out
