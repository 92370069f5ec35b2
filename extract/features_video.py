"""Per-video steps of the `extract features` job (extract/features.py): person / object detectors
on keyframe frames, the RoI features of one unit of clips, and a finished video's commit (its rows of
every group the job writes, one `add_groups` call, so they are committed together)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from stagecache.extract.actors import KeyframeRows, RowBuilder
from stagecache.extract.detectors.keyframes import frames_to_tensor, run_detectors
from stagecache.extract.roi import pool_rois
from stagecache.extract.store import LEVELS
from stagecache.extract.vit.specs import layer_group


@dataclass(frozen=True)
class Pooling:
    """How each box's features are pooled (from `extract features --save/--roi-*/--context-grid`)."""
    levels: tuple[str, ...]  # extra levels to save besides the pooled feature ("roi", "temporal", "context")
    resolution: int  # RoI grid side
    aligned: bool  # RoIAlign's aligned=True (half-pixel offset)
    context_grid: int  # side of the keyframe context map
    box_extend: tuple[float, float] | None = None  # the backbone's test-time box enlargement (roi.extend_rois)
    layers: tuple[int, ...] = ()  # blocks whose pooled features go to groups <group>.l<n> (--layers)


class Detect:
    """Person / object detectors on keyframe frames (only when named; `precomputed`/`none` read files)."""

    def __init__(self, person_detector: str, person_kwargs: dict, objects: str, object_kwargs: dict, device):
        self.person = self.objects = None
        if person_detector != "precomputed" or objects not in ("none", "precomputed"):
            from stagecache.extract.detectors import build_object_detector, build_person_detector
            if person_detector != "precomputed":
                self.person = build_person_detector(person_detector, **person_kwargs)
            if objects not in ("none", "precomputed"):
                self.objects = build_object_detector(objects, **object_kwargs)
        self.device = device

    def run(self, clips: np.ndarray, keys: list[tuple[str, float]]):
        """Keyframe frames = the middle frame of each clip (sample index T/2 is the keyframe)."""
        frames = frames_to_tensor(clips[:, clips.shape[1] // 2], self.device)  # (B, 3, H, W)
        people = objs = None
        det_people, det_objs = run_detectors((self.person, self.objects), frames, keys)
        if det_people is not None:
            people = [(d.box.cpu().numpy().astype(np.float32), d.score.cpu().numpy().astype(np.float32))
                      for d in det_people]
        if det_objs is not None:
            objs = []
            for d in det_objs:
                o = {"object_box": d.box.cpu().numpy().astype(np.float32),
                     "object_class": d.class_id.cpu().numpy().astype(np.int64),
                     "object_score": d.score.cpu().numpy().astype(np.float32)}
                if self.objects.feature_dim:
                    o["object_feature"] = d.feature.cpu().numpy().astype(np.float32)
                objs.append(o)
        return people, objs


def process_unit(res, st, rows_v: KeyframeRows | None, keys_v, rows: RowBuilder, bb, detect, pooling: Pooling,
                 device, autocast):
    u = res.unit
    inside = res.inside
    st["inside"].append(inside)
    if not inside.any():
        return
    pos = u.index[inside]  # keyframe positions in the video
    clips = res.clips
    if rows_v is None:  # detectors on the keyframe frames
        keys = [(u.video, float(t)) for t in u.timestamps[inside]]
        people, objs = detect.run(clips, keys)
        boxes = []
        for j, p in enumerate(pos):
            k = keys_v[p]
            if people is not None:
                st["people"][k] = people[j]
            if objs is not None:
                st["objs"][k] = objs[j]
            # the same rows RowBuilder.build makes at the end of the video: GT first, then people
            dets = people[j] if people is not None else rows.proposal_rows(u.video, k)
            boxes.append(rows.actors_from_detections(*rows.gt_rows(u.video, k), *dets)["actor_box"])
    else:
        if "slices" not in st:  # once per video, not once per unit
            st["slices"] = rows_v.actor_slices()
        boxes = [rows_v.arrays["actor_box"][st["slices"][p]] for p in pos]
    need = np.array([len(b) > 0 for b in boxes]) | ("context" in pooling.levels)
    feats = {"pos": pos}
    if need.any():
        x = torch.from_numpy(clips[need]).to(device, non_blocking=True)
        with torch.no_grad(), torch.autocast(device.type, enabled=autocast):
            maps, layer_maps = bb.forward_layers(bb.pack(x), pooling.layers) if pooling.layers else (bb(bb.pack(x)), {})
        kept = [b for b, n in zip(boxes, need) if n]
        bidx = np.concatenate([np.full(len(b), j) for j, b in enumerate(kept)] or [np.zeros(0, int)])
        allb = np.concatenate(kept or [np.zeros((0, 4), np.float32)])
        tb, ti = torch.from_numpy(allb.astype(np.float32)).to(device), torch.from_numpy(bidx.astype(np.int64)).to(device)
        kw = dict(input_size=tuple(x.shape[2:4]), stride=bb.stride, resolution=pooling.resolution,
                  aligned=pooling.aligned, box_extend=pooling.box_extend)
        with torch.no_grad():
            out = pool_rois(maps, tb, ti, levels=pooling.levels, context_grid=pooling.context_grid, **kw)
            for n, lmaps in layer_maps.items():  # block n: pooled the same way, under "l<n>"
                out[f"l{n}"] = pool_rois(lmaps, tb, ti, **kw)["pooled"]
        feats.update({k: t.float().cpu().numpy() for k, t in out.items()})
    feats["need"] = need
    st["feats"].append(feats)


def finish_video(v, st, rows_v, keys_v, rows: RowBuilder, writer, group, done_base, done_group, summary,
                 pooling: Pooling):
    inside = np.concatenate(st["inside"]) if st["inside"] else np.zeros(0, bool)
    if rows_v is None:
        rows_v = rows.build(v, detections=st["people"] or None, objects=st["objs"] or None, keys=keys_v)
    if (~inside).any():
        past = [float(t) for t in rows_v.timestamps[~inside]]
        summary["keyframes_past_end"].append({"video": v, "timestamps": past})
        print(f"WARNING: video {v}: {len(past)} keyframe(s) outside the video, dropped: {past[:5]}"
              f"{' ...' if len(past) > 5 else ''}", file=sys.stderr)
        rows_v = rows_v.select(inside)
    n_a = int(rows_v.actor_counts.sum())
    pooled, extra = [], {lvl: [] for lvl in pooling.levels}
    per_layer: dict[int, list] = {n: [] for n in pooling.layers}
    # features come in keyframe order (units are in order; within a unit boxes are in row order)
    for f in st["feats"]:
        if "pooled" in f:
            pooled.append(f["pooled"])
            for lvl in pooling.levels:
                extra[lvl].append(f[lvl])
            for n in pooling.layers:
                per_layer[n].append(f[f"l{n}"])
    if not pooled:  # no keyframe of this video has a box: empty arrays of the right widths
        c, r, t = st["channels"], pooling.resolution, st["frames"]
        pooled = [np.zeros((0, c), np.float32)]
        extra = {"roi": [np.zeros((0, c, r, r), np.float32)], "temporal": [np.zeros((0, t, c), np.float32)],
                 "context": [np.zeros((0,) + tuple(st["context_shape"]), np.float32)]}
    arrays = {"actor_pooled": np.concatenate(pooled).astype(np.float16)}
    if arrays["actor_pooled"].shape[0] != n_a:
        raise RuntimeError(f"video {v}: {arrays['actor_pooled'].shape[0]} pooled rows for {n_a} actors")
    for name, level in LEVELS.items():
        if name in pooling.levels:
            arrays[level.array] = np.concatenate(extra[name]).astype(np.float16)
    groups = {} if v in done_base else {"base": rows_v.arrays}
    if v not in done_group:  # the layer groups are committed with their backbone group
        groups[group] = arrays
        for n, parts in per_layer.items():
            groups[layer_group(group, n)] = {"actor_pooled": np.concatenate(parts or [np.zeros((0, st["channels"]))])
                                             .astype(np.float16)}
    writer.add_groups(v, timestamps=rows_v.timestamps, actor_counts=rows_v.actor_counts,
                      object_counts=rows_v.object_counts, groups=groups)
    summary["done"] += 1
    summary["keyframes"] += len(rows_v.timestamps)
    summary["boxes"] += n_a
    summary["objects"] += int(rows_v.object_counts.sum())
