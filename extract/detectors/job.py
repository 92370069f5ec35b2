"""The `extract detections` job: people and/or objects over the keyframes of videos.

Outputs in `out_dir`:
- `parts/<video>.npz`, one per finished video (written atomically; a rerun skips them, so an
  interrupted job resumes): `kf_time` (K,), `person_kf`, `person_box`, `person_score`, `object_kf`,
  `object_box`, `object_class`, `object_score`, `object_feature` (O, D)[, `object_attr`,
  `object_attr_score`]; `*_kf` index into `kf_time`.
- `proposals.csv`: AVA / PySlowFast proposals (`ava_io.write_proposals_csv`) of every part;
- `objects.csv`: `video,timestamp,x1,y1,x2,y2,class_id,score` (`ava_io.write_objects`);
- `object_classes.txt` (one class name per line, line i = class id i) and
  `detections_config.json` (the resolved arguments).
Keyframes come from a CSV whose first two columns are video,timestamp (any AVA annotations or
proposals file), or from a `start:end[:step]` range applied to every video found.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import OBJECT_DETECTORS, PERSON_DETECTORS, build_object_detector, build_person_detector


@dataclass
class DetectionsArgs:
    video_dir: str
    out_dir: str
    keyframes: str | None = None  # CSV with video,timestamp in its first two columns
    timestamps: str | None = None  # "902:1798[:1]" inclusive range for every video found
    videos: tuple[str, ...] = ()  # restrict to these video ids
    fps: float = 30.0
    time_offset: float = 0.0  # video_time = timestamp - time_offset (see extract/video.py)
    kinetics_names: bool = False
    person_detector: str = "torchvision"  # or "none"
    person_weights: str | None = None
    person_config: str | None = None  # detectron2 config
    person_file: str | None = None  # precomputed proposals (CSV / pkl / json)
    person_score_thresh: float = 0.8
    person_nms_thresh: float = 0.5
    person_max: int = 50
    person_min_size: int = 800  # torchvision input shortest side
    person_max_size: int = 1333
    objects: str = "none"
    vg_weights: str | None = None
    vg_config: str | None = None  # vg-detectron2 config
    vg_classes: str | None = None
    objects_file: str | None = None  # precomputed TSV / npz
    object_score_thresh: float = 0.2
    object_nms_thresh: float = 0.3
    max_objects: int = 25
    min_objects: int = 0
    box_source: str = "regressed"
    vg_min_size: int = 600
    vg_max_size: int = 1000
    random_init: bool = False
    batch_size: int = 4
    device: str = "cpu"
    overwrite: bool = False

    def __post_init__(self):
        self.videos = tuple(self.videos)
        if not os.path.isdir(self.video_dir):
            raise ValueError(f"video_dir {self.video_dir} is not a directory")
        if (self.keyframes is None) == (self.timestamps is None):
            raise ValueError("give exactly one of keyframes (a CSV) and timestamps (start:end[:step])")
        if self.keyframes is not None and not os.path.isfile(self.keyframes):
            raise ValueError(f"keyframes file {self.keyframes} does not exist")
        if self.timestamps is not None:
            parse_range(self.timestamps)
        if self.person_detector != "none" and self.person_detector not in PERSON_DETECTORS:
            raise ValueError(f"unknown person detector {self.person_detector!r}; valid: "
                             f"{sorted(PERSON_DETECTORS) + ['none']}")
        if self.objects not in OBJECT_DETECTORS:
            raise ValueError(f"unknown objects {self.objects!r}; valid: {sorted(OBJECT_DETECTORS)}")
        if self.person_detector == "none" and self.objects == "none":
            raise ValueError("nothing to do: person_detector and objects are both 'none'")
        need = {"detectron2": ("person_config", "person_weights"), "precomputed": ("person_file",)}
        for attr in need.get(self.person_detector, ()):
            if getattr(self, attr) is None:
                raise ValueError(f"person_detector {self.person_detector!r} needs {attr}")
        need = {"vg-detectron2": ("vg_config", "vg_weights"), "precomputed": ("objects_file",)}
        for attr in need.get(self.objects, ()):
            if getattr(self, attr) is None:
                raise ValueError(f"objects {self.objects!r} needs {attr}")
        for name in ("person_weights", "person_config", "person_file", "vg_weights", "vg_config",
                     "vg_classes", "objects_file"):
            p = getattr(self, name)
            if p is not None and not os.path.exists(p):
                raise ValueError(f"{name}: {p} does not exist")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")


def parse_range(spec: str) -> np.ndarray:
    try:
        parts = [float(p) for p in spec.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        step = parts[2] if len(parts) == 3 else 1.0
        if step <= 0 or parts[1] < parts[0]:
            raise ValueError
    except ValueError:
        raise ValueError(f"timestamps must be start:end[:step] with start <= end, step > 0; got {spec!r}") from None
    n = int(np.floor((parts[1] - parts[0]) / step + 1e-9)) + 1
    return parts[0] + step * np.arange(n)


def read_keyframe_csv(path: str) -> dict[str, np.ndarray]:
    """video -> sorted unique timestamps from the first two columns (a header row is skipped)."""
    out: dict[str, set] = {}
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            try:
                ts = float(row[1])
            except (IndexError, ValueError):
                if i == 1:
                    continue  # header
                raise ValueError(f"{path}:{i}: expected video,timestamp,... got {row[:2]}") from None
            out.setdefault(row[0].strip(), set()).add(round(ts, 3))
    return {v: np.array(sorted(t)) for v, t in out.items()}


def _build_detectors(a: DetectionsArgs):
    person = None
    if a.person_detector == "torchvision":
        person = build_person_detector("torchvision", weights=a.person_weights, random_init=a.random_init,
                                       score_thresh=a.person_score_thresh, nms_thresh=a.person_nms_thresh,
                                       max_per_frame=a.person_max, min_size=a.person_min_size,
                                       max_size=a.person_max_size, device=a.device)
    elif a.person_detector == "detectron2":
        person = build_person_detector("detectron2", config=a.person_config, weights=a.person_weights,
                                       score_thresh=a.person_score_thresh, nms_thresh=a.person_nms_thresh,
                                       max_per_frame=a.person_max, device=a.device)
    elif a.person_detector == "precomputed":
        person = build_person_detector("precomputed", path=a.person_file, score_thresh=a.person_score_thresh,
                                       nms_thresh=a.person_nms_thresh, max_per_frame=a.person_max, device=a.device)
    post = dict(score_thresh=a.object_score_thresh, nms_thresh=a.object_nms_thresh, max_objects=a.max_objects,
                min_objects=a.min_objects, box_source=a.box_source, device=a.device)
    vg = None
    if a.objects == "vg" or (a.objects == "precomputed" and (a.vg_weights or a.random_init)):
        vg = build_object_detector("vg", weights=a.vg_weights, random_init=a.random_init and not a.vg_weights,
                                   vg_classes=a.vg_classes, min_size=a.vg_min_size, max_size=a.vg_max_size, **post)
    if a.objects == "vg":
        objects = vg
    elif a.objects == "vg-detectron2":
        objects = build_object_detector("vg-detectron2", config=a.vg_config, weights=a.vg_weights,
                                        vg_classes=a.vg_classes, min_size=a.vg_min_size, max_size=a.vg_max_size,
                                        **post)
    elif a.objects == "precomputed":
        objects = build_object_detector("precomputed", path=a.objects_file, feature_extractor=vg,
                                        max_objects=a.max_objects, score_thresh=0.0, vg_classes=a.vg_classes,
                                        device=a.device)
    else:
        objects = build_object_detector("none")
    return person, objects


def _atomic_savez(path: str, arrays: dict) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


@torch.no_grad()  # a decorator, not set_grad_enabled(False): callers' grad mode must survive the job
def run_detections(a: DetectionsArgs) -> dict:
    """Run the job; returns a summary dict (videos, keyframes, people, objects)."""
    from extract.ava_io import Objects, Proposals, write_objects, write_proposals_csv
    from extract.video import find_videos

    found = find_videos(a.video_dir, kinetics_names=a.kinetics_names)
    if a.keyframes is not None:
        plan = read_keyframe_csv(a.keyframes)
    else:
        rng = parse_range(a.timestamps)
        plan = {v: rng for v in found}
    if a.videos:
        plan = {v: t for v, t in plan.items() if v in set(a.videos)}
    missing = sorted(v for v in plan if v not in found)
    if missing:
        raise ValueError(f"{len(missing)} video(s) not found in {a.video_dir}: {missing[:10]}")
    os.makedirs(os.path.join(a.out_dir, "parts"), exist_ok=True)
    cfg_path = os.path.join(a.out_dir, "detections_config.json")
    if os.path.exists(cfg_path) and not a.overwrite:
        old = json.load(open(cfg_path))
        if old != json.loads(json.dumps(asdict(a))):
            raise ValueError(f"{a.out_dir} holds detections made with other arguments ({cfg_path}); "
                             "use another out_dir or overwrite=True")
    with open(cfg_path + ".tmp", "w") as f:
        json.dump(asdict(a), f, indent=2)
    os.replace(cfg_path + ".tmp", cfg_path)

    person, objects = _build_detectors(a)
    for video in sorted(plan):
        part = os.path.join(a.out_dir, "parts", f"{video}.npz")
        if os.path.exists(part) and not a.overwrite:
            continue
        path, offset = found[video]
        times = plan[video]
        arrays = _run_video(str(path), video, times, a, person, objects,
                            time_offset=a.time_offset if offset is None else offset)
        _atomic_savez(part, arrays)

    # Assemble the CSVs from every part (also those of earlier runs).
    pv, pt, pb, ps, ov, ot, ob, oc, os_ = [], [], [], [], [], [], [], [], []
    for video in sorted(plan):
        z = np.load(os.path.join(a.out_dir, "parts", f"{video}.npz"))
        kt = z["kf_time"]
        pv += [video] * len(z["person_kf"]); pt.append(kt[z["person_kf"]]); pb.append(z["person_box"])
        ps.append(z["person_score"])
        ov += [video] * len(z["object_kf"]); ot.append(kt[z["object_kf"]]); ob.append(z["object_box"])
        oc.append(z["object_class"]); os_.append(z["object_score"])
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape)  # noqa: E731
    if person is not None:
        write_proposals_csv(os.path.join(a.out_dir, "proposals.csv"),
                            Proposals(np.array(pv, dtype=str), cat(pt, (0,)), cat(pb, (0, 4)), cat(ps, (0,))))
    if a.objects != "none":
        write_objects(os.path.join(a.out_dir, "objects.csv"),
                      Objects(np.array(ov, dtype=str), cat(ot, (0,)), cat(ob, (0, 4)), cat(oc, (0,)), cat(os_, (0,))))
        with open(os.path.join(a.out_dir, "object_classes.txt"), "w") as f:
            f.writelines(n + "\n" for n in objects.class_names)
    for det in (person, objects):
        if getattr(det, "missing", None):
            warnings.warn(f"{len(det.missing)} keyframe(s) absent from the precomputed file, e.g. "
                          f"{det.missing[:3]} (video, timestamp ms): they got no detections", UserWarning)
    return {"videos": len(plan), "keyframes": int(sum(len(t) for t in plan.values())),
            "people": len(pv), "objects": len(ov)}


def _run_video(path, video, times, a: DetectionsArgs, person, objects, *, time_offset) -> dict:
    from extract.video import VideoReadError, open_video

    d = getattr(objects, "feature_dim", 0)
    acc = {k: [] for k in ("person_kf", "person_box", "person_score", "object_kf", "object_box",
                           "object_class", "object_score", "object_feature", "object_attr", "object_attr_score")}
    needs_frames = not (a.person_detector in ("precomputed", "none") and a.objects in ("precomputed", "none")
                        and getattr(objects, "feature_extractor", None) is None)
    reader = open_video(path, fps=a.fps, time_offset=time_offset) if needs_frames else None
    try:
        for s in range(0, len(times), a.batch_size):
            ts = times[s: s + a.batch_size]
            frames = None
            if reader is not None:
                try:
                    # A 2-frame clip at rate 1 ends on the keyframe's own frame (extract/video.py sampling).
                    arr = np.stack([reader.read_clip(float(t), 2, 1)[-1] for t in ts])  # (B, H, W, 3)
                except VideoReadError as e:
                    raise VideoReadError(f"video {video}: {e}") from e
                frames = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
            keys = [(video, float(t)) for t in ts]
            people = person(frames, keys) if person is not None else [None] * len(ts)
            objs = objects(frames, keys)
            for j, (p, o) in enumerate(zip(people, objs)):
                k = s + j
                if p is not None:
                    acc["person_kf"].append(np.full(len(p), k)); acc["person_box"].append(p.box.cpu().numpy())
                    acc["person_score"].append(p.score.cpu().numpy())
                acc["object_kf"].append(np.full(len(o), k)); acc["object_box"].append(o.box.cpu().numpy())
                acc["object_class"].append(o.class_id.cpu().numpy()); acc["object_score"].append(o.score.cpu().numpy())
                acc["object_feature"].append(o.feature.float().cpu().numpy().reshape(len(o), d))
                if o.attr_id is not None:
                    acc["object_attr"].append(o.attr_id.cpu().numpy())
                    acc["object_attr_score"].append(o.attr_score.cpu().numpy())
    finally:
        if reader is not None:
            reader.close()
    shapes = {"person_box": (0, 4), "object_box": (0, 4), "object_feature": (0, d)}
    dtypes = {"person_kf": np.int64, "object_kf": np.int64, "object_class": np.int64, "object_attr": np.int64}
    out = {"kf_time": np.asarray(times, np.float64)}
    for k, v in acc.items():
        if k in ("object_attr", "object_attr_score") and not v:
            continue
        arr = np.concatenate(v) if v else np.zeros(shapes.get(k, (0,)))
        out[k] = arr.astype(dtypes.get(k, np.float32))
    return out
