"""IoU + Hungarian tracker: links person boxes across the keyframes of a video into track ids.

Keyframes of each video are visited in time order. Every live track (its last box and time) is
matched to the boxes of the next keyframe by maximum total IoU (Hungarian assignment,
scipy.optimize.linear_sum_assignment); a pair is kept only if its IoU >= `iou_threshold`. A track
can be continued only if its last box is at most `max_gap` seconds older than the keyframe
(1 s = consecutive AVA keyframes; raise it to bridge missed detections). Unmatched boxes start new
tracks. Ids are unique over the whole split. Rows of different `actor_group`s (e.g. ground-truth
rows and detector rows of one keyframe, which describe the same people twice) are tracked
independently.

`write_tracks(store_path)` runs this over a store's base boxes and writes the derived group
"tracks" with the array `actor_track` (A,), in the store's actor order; `TracksArgs` are the
arguments of `extract tracks`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from stagecache.core.boxes import box_iou
from stagecache.core.timekeys import TIME_EPS

__all__ = ["TracksArgs", "track_boxes", "write_tracks"]


@dataclass
class TracksArgs:
    """Arguments of `extract tracks` (`write_tracks`); each field's metadata is its CLI option
    (pipelines/commands/options.py)."""

    store: str = field(metadata={"help": "Store whose base boxes are linked into tracks."})
    iou_threshold: float = field(default=0.3, metadata={"help": "Smallest IoU for a box to continue a track.",
                                                        "range": {"min": 0, "max": 1}})
    max_gap: float = field(default=1.0, metadata={"help": "Seconds a track may skip (1 = consecutive AVA keyframes).",
                                                  "range": {"min": 0}})
    separate_gt: bool = field(default=True, metadata={
        "help": "Track ground-truth rows and detector rows independently.", "option": "--separate-gt/--mixed"})

    def __post_init__(self):
        if os.path.isfile(self.store):  # a CSV or JSON given for the store: say so, not NotADirectoryError
            from stagecache.extract.store import StoreError  # here: --help imports this module

            raise StoreError(f"{self.store}: a file, not a feature store (a store is a directory holding zarr.json)")
        if not 0 <= self.iou_threshold <= 1 or self.max_gap < 0:
            raise ValueError(f"iou_threshold must be in [0, 1] and max_gap >= 0, got {self.iou_threshold}, {self.max_gap}")


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensors, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def track_boxes(kf_video, kf_time, actor_kf, actor_box, *, iou_threshold: float = 0.3,
                max_gap: float = 1.0, actor_group=None) -> np.ndarray:
    """Track ids (A,) int64 for the actors, linking boxes across keyframes of each video.

    kf_video (K,) video index, kf_time (K,) seconds, actor_kf (A,) index into the keyframes,
    actor_box (A, 4) normalised x1y1x2y2; actor_group (A,) optional: rows link only within a group.
    Ids are 0, 1, 2, ... in order of first appearance (video, time, row).
    """
    from scipy.optimize import linear_sum_assignment  # here: `extract tracks --help` need not load scipy

    kf_video, kf_time = _numpy(kf_video).astype(np.int64), _numpy(kf_time).astype(np.float64)
    actor_kf, actor_box = _numpy(actor_kf).astype(np.int64), _numpy(actor_box).astype(np.float64)
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 seconds, got {max_gap}")
    k, a = kf_video.shape[0], actor_kf.shape[0]
    if kf_time.shape != (k,) or actor_box.shape != (a, 4):
        raise ValueError(f"track_boxes: shapes kf_video {kf_video.shape}, kf_time {kf_time.shape}, "
                         f"actor_kf {actor_kf.shape}, actor_box {actor_box.shape} do not agree")
    if a and (actor_kf.min() < 0 or actor_kf.max() >= k):
        raise ValueError(f"track_boxes: actor_kf holds indices outside [0, {k})")
    group = np.zeros(a, np.int64) if actor_group is None else _numpy(actor_group).astype(np.int64)
    ids = np.full(a, -1, np.int64)
    next_id = 0
    kf_order = np.lexsort((kf_time, kf_video))  # by video, then time
    rows_by_kf = [[] for _ in range(k)]
    for r in range(a):
        rows_by_kf[actor_kf[r]].append(r)
    # Live tracks per (video, group): track id -> (last box, last time).
    live: dict[tuple[int, int], dict[int, tuple[np.ndarray, float]]] = {}
    for kf in kf_order:
        v, t = int(kf_video[kf]), float(kf_time[kf])
        rows = np.asarray(rows_by_kf[kf], dtype=np.int64)
        for g in (np.unique(group[rows]) if rows.size else ()):
            rg = rows[group[rows] == g]
            tracks = live.setdefault((v, int(g)), {})
            cand = [tid for tid, (_, lt) in tracks.items() if t - lt <= max_gap + TIME_EPS]
            matched = np.full(rg.size, -1, np.int64)
            if cand:
                iou = box_iou(np.stack([tracks[c][0] for c in cand]), actor_box[rg])  # (T, n)
                ti, bi = linear_sum_assignment(iou, maximize=True)
                ok = iou[ti, bi] >= iou_threshold
                matched[bi[ok]] = np.asarray(cand, np.int64)[ti[ok]]
            for n, r in enumerate(rg):
                if matched[n] < 0:
                    matched[n] = next_id
                    next_id += 1
                ids[r] = matched[n]
                tracks[int(matched[n])] = (actor_box[r], t)
            # Tracks that can no longer be continued are dropped (keeps matching small).
            for tid in [tid for tid, (_, lt) in tracks.items() if t - lt > max_gap + TIME_EPS]:
                del tracks[tid]
    return ids


def write_tracks(store_path: str, *, iou_threshold: float = 0.3, max_gap: float = 1.0,
                 separate_gt: bool = True) -> np.ndarray:
    """Track the base boxes of a store and write group "tracks" (array `actor_track`).

    `separate_gt`: track ground-truth rows and detector rows independently (a training store
    holds both for the same people). Returns the track ids written.
    """
    from stagecache.extract.store import open_store, write_group

    st = open_store(store_path)
    names = ["actor_box"] + (["actor_is_gt"] if separate_gt else [])
    tab = st.load({"base": names})
    box = tab.data["base/actor_box"]
    group = tab.data["base/actor_is_gt"].long() if separate_gt else None
    ids = track_boxes(tab.kf_video, tab.kf_time, tab.actor_kf, box, iou_threshold=iou_threshold,
                      max_gap=max_gap, actor_group=group)
    attrs = {"tracker": "iou_hungarian", "iou_threshold": float(iou_threshold),
             "max_gap": float(max_gap), "separate_gt": bool(separate_gt),
             "num_tracks": int(ids.max() + 1) if ids.size else 0}
    write_group(store_path, "tracks", attrs, {"actor_track": ids})
    return ids
