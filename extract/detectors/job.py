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
proposals file), or from a `start:end[:step]` range applied to every video found, or (JHMDB-21 /
UCF101-24, `dataset` jhmdb|ucf24) from the GT pickle: the keyframes `extract features --dataset`
stores for the same split, side and stride (timestamp = (frame - 1) / fps), over the dataset's
frame folders, so its proposals CSV feeds `extract features --dataset ... --proposals`.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from dataclasses import asdict

import numpy as np
import torch

from stagecache.core.atomic import atomic_open, atomic_path
from stagecache.core.timekeys import timestamp_key

from stagecache.extract.datasets.tube_boxes import keyframe_times
from stagecache.extract.datasets.tubes_pkl import (TUBE_DATASETS, dataset_spec, find_tube_videos, parse_split,
                                                   read_tube_pickle)
from stagecache.extract.detections_args import DetectionsArgs, parse_range  # DetectionsArgs: also imported from here
from stagecache.core.errors import UserError
from stagecache.extract.formats.csv_table import AvaFormatError

from . import build_object_detector, build_person_detector
from .keyframes import detect_keyframes


class DetectionsInputError(UserError, ValueError):
    """Videos missing from --video-dir, or an --out folder of other arguments (one-line CLI error)."""


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
                raise AvaFormatError(path, i, f"expected video,timestamp,... got {row[:2]}") from None
            if not np.isfinite(ts):
                raise AvaFormatError(path, i, f"timestamp {row[1]!r} is not a finite number")
            out.setdefault(row[0].strip(), set()).add(timestamp_key(ts))  # one keyframe per ms key
    return {v: np.array(sorted(t), dtype=np.float64) / 1000.0 for v, t in out.items()}


def _tube_plan(a: DetectionsArgs) -> tuple[dict, dict[str, np.ndarray]]:
    """JHMDB-21 / UCF101-24: (video -> (frame folder or file, offset 0), video -> keyframe timestamps)."""
    gt = read_tube_pickle(a.annotations, trust=a.trust_pickle)
    side, index = parse_split(a.split)
    split_videos = gt.videos(side, index)
    plan = keyframe_times(gt, split_videos, fps=a.fps, frame_stride=a.frame_stride or 1)
    return find_tube_videos(a.video_dir, dataset_spec(a.dataset), split_videos), plan


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
                                       max_per_frame=a.person_max, device=a.device, trust_pickle=a.trust_pickle)
    elif a.person_detector == "precomputed":
        person = build_person_detector("precomputed", path=a.person_file, score_thresh=a.person_score_thresh,
                                       nms_thresh=a.person_nms_thresh, max_per_frame=a.person_max, device=a.device,
                                       trust_pickle=a.trust_pickle)
    post = dict(score_thresh=a.object_score_thresh, nms_thresh=a.object_nms_thresh, max_objects=a.max_objects,
                min_objects=a.min_objects, box_source=a.box_source, vg_postprocess=a.vg_postprocess, device=a.device)
    vg = None
    if a.objects == "vg" or (a.objects == "precomputed" and (a.vg_weights or a.random_init)):
        vg = build_object_detector("vg", weights=a.vg_weights, random_init=a.random_init and not a.vg_weights,
                                   vg_classes=a.vg_classes, min_size=a.vg_min_size, max_size=a.vg_max_size,
                                   trust_pickle=a.trust_pickle, **post)
    if a.objects == "vg":
        objects = vg
    elif a.objects == "vg-detectron2":
        objects = build_object_detector("vg-detectron2", config=a.vg_config, weights=a.vg_weights,
                                        vg_classes=a.vg_classes, min_size=a.vg_min_size, max_size=a.vg_max_size,
                                        trust_pickle=a.trust_pickle, **post)
    elif a.objects == "precomputed":
        objects = build_object_detector("precomputed", path=a.objects_file, feature_extractor=vg,
                                        max_objects=a.max_objects, score_thresh=0.0, vg_classes=a.vg_classes,
                                        device=a.device, trust_pickle=a.trust_pickle)
    else:
        objects = build_object_detector("none")
    return person, objects


@torch.no_grad()  # a decorator, not set_grad_enabled(False): callers' grad mode must survive the job
def run_detections(a: DetectionsArgs) -> dict:
    """Run the job; returns a summary dict (videos, keyframes, people, objects)."""
    from stagecache.extract.ava_io import Objects, Proposals, write_objects, write_proposals_csv
    from stagecache.extract.video import find_videos

    if a.dataset in TUBE_DATASETS:
        found, plan = _tube_plan(a)
    else:
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
        raise DetectionsInputError(f"{len(missing)} video(s) not found in {a.video_dir}: {missing[:10]}")
    os.makedirs(os.path.join(a.out_dir, "parts"), exist_ok=True)
    cfg_path = os.path.join(a.out_dir, "detections_config.json")
    if os.path.exists(cfg_path) and not a.overwrite:
        old = json.load(open(cfg_path))
        old.setdefault("vg_postprocess", "caffe")  # folders made before the option had the caffe objects
        if old != json.loads(json.dumps(asdict(a))):
            raise DetectionsInputError(f"{a.out_dir} holds detections made with other arguments ({cfg_path}); "
                             "use another out_dir or overwrite=True")
    with atomic_open(cfg_path, "w") as f:
        json.dump(asdict(a), f, indent=2)

    person, objects = _build_detectors(a)
    # Frames are decoded only for a detector that runs on them (precomputed files need none).
    read_frames = (person is not None and person.needs_frames) or objects.needs_frames
    for video in sorted(plan):
        part = os.path.join(a.out_dir, "parts", f"{video}.npz")
        if os.path.exists(part) and not a.overwrite:
            continue
        os.makedirs(os.path.dirname(part), exist_ok=True)  # jhmdb/ucf24 videos are <class>/<clip>
        path, offset = found[video]
        times = plan[video]
        arrays = _run_video(str(path), video, times, person, objects, fps=a.fps, batch_size=a.batch_size,
                            time_offset=a.time_offset if offset is None else offset, read_frames=read_frames)
        with atomic_path(part) as tmp:
            np.savez(tmp, **arrays)

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
        with atomic_open(os.path.join(a.out_dir, "object_classes.txt"), "w") as f:
            f.writelines(n + "\n" for n in objects.class_names)
    for det in (person, objects):
        if det is not None and det.missing:
            warnings.warn(f"{len(det.missing)} keyframe(s) absent from the precomputed file, e.g. "
                          f"{det.missing[:3]} (video, timestamp ms): they got no detections", UserWarning)
    return {"videos": len(plan), "keyframes": int(sum(len(t) for t in plan.values())),
            "people": len(pv), "objects": len(ov)}


def _run_video(path: str, video: str, times: np.ndarray, person, objects, *, fps: float, batch_size: int,
               time_offset: float, read_frames: bool) -> dict:
    from stagecache.extract.video import open_video

    d = objects.feature_dim
    acc = {k: [] for k in ("person_kf", "person_box", "person_score", "object_kf", "object_box",
                           "object_class", "object_score", "object_feature", "object_attr", "object_attr_score")}
    reader = open_video(path, fps=fps, time_offset=time_offset) if read_frames else None
    try:
        for s, (people, objs) in detect_keyframes((person, objects), reader, video, times, batch_size=batch_size):
            people = people if people is not None else [None] * len(objs)
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
