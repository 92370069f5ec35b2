"""From store tables to `HeadInput` batches.

`GraphData` is one split's selected actors, objects and keyframes as flat tensors on one device
(the whole split stays there when it fits: AVA's train split of pooled features is ~4 GB in
float16). `GraphData.batch(query_kf, radius)` builds the input of a head for a set of query
keyframes: it adds every keyframe of the same video within `radius` seconds, found by (video,
timestamp) and never by position, so a head's output for the query actors is the one it would
give on the whole video.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from heads.batch import HeadInput

_EPS = 1e-3  # timestamps are compared with millisecond tolerance, as everywhere in the project
# actor_extras key of a per-actor relation bank (ACFB); batches then also carry BANK_KF.
BANK_MAPS = "bank_maps"
BANK_KF = "bank_kf"


def ranges_to_indices(lo: Tensor, hi: Tensor) -> Tensor:
    """Concatenate the integer ranges [lo_i, hi_i) without a Python loop."""
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long, device=lo.device)
    starts = torch.repeat_interleave(lo, counts)
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return starts + (torch.arange(total, device=lo.device) - first)


def window_bounds(kf_video: np.ndarray, kf_time: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """For keyframes sorted by (video, time): [lo, hi) of the keyframes of the same video within radius."""
    span = float(kf_time.max() - kf_time.min()) + 2 * radius + 10.0 if len(kf_time) else 1.0
    key = kf_video.astype(np.float64) * span + (kf_time - (kf_time.min() if len(kf_time) else 0.0))
    if np.any(np.diff(key) < -_EPS):
        raise ValueError("keyframes must be sorted by (video, timestamp)")
    lo = np.searchsorted(key, key - radius - _EPS, side="left")
    hi = np.searchsorted(key, key + radius + _EPS, side="right")
    return lo.astype(np.int64), hi.astype(np.int64)


@dataclass
class GraphData:
    """One split, filtered to the actors a run uses, on one device."""

    video_names: list[str]
    kf_video: Tensor  # (K,) long
    kf_time: Tensor  # (K,) float64
    actor_offset: Tensor  # (K+1,) long, into the selected actors
    object_offset: Tensor  # (K+1,) long
    actor_feat: Tensor  # (A, C) float16/float32
    actor_box: Tensor  # (A, 4)
    actor_labels: Tensor  # (A, L) uint8 multi-hot
    actor_score: Tensor  # (A,)
    actor_is_gt: Tensor  # (A,) bool
    actor_track: Tensor  # (A,) long
    actor_row: Tensor  # (A,) long: row in the store's actor table (to write results back)
    object_feat: Tensor  # (O, D)
    object_box: Tensor  # (O, 4)
    object_class: Tensor  # (O,) long
    actor_roi: Tensor | None = None  # (A, C, k, k)
    actor_temporal: Tensor | None = None  # (A, T, C)
    context: Tensor | None = None  # (K, C, H, W)
    actor_extras: dict[str, Tensor] = field(default_factory=dict)  # per-actor arrays passed in HeadInput.extras
    _bounds: dict[float, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    @property
    def num_keyframes(self) -> int:
        return int(self.kf_video.shape[0])

    @property
    def num_actors(self) -> int:
        return int(self.actor_feat.shape[0])

    @property
    def device(self) -> torch.device:
        return self.actor_feat.device

    def actor_kf(self) -> Tensor:
        """(A,) keyframe index of every selected actor."""
        counts = self.actor_offset[1:] - self.actor_offset[:-1]
        return torch.repeat_interleave(torch.arange(self.num_keyframes, device=self.device), counts)

    def query_keyframes(self) -> Tensor:
        """Keyframes with at least one selected actor: the ones a run predicts."""
        counts = self.actor_offset[1:] - self.actor_offset[:-1]
        return torch.nonzero(counts > 0).flatten()

    def bounds(self, radius: float) -> tuple[Tensor, Tensor]:
        if radius not in self._bounds:
            lo, hi = window_bounds(self.kf_video.cpu().numpy(), self.kf_time.cpu().numpy(), radius)
            self._bounds[radius] = (torch.from_numpy(lo).to(self.device), torch.from_numpy(hi).to(self.device))
        return self._bounds[radius]

    def batch(self, query_kf: Tensor, radius: float, dtype: torch.dtype = torch.float32) -> tuple[HeadInput, Tensor]:
        """HeadInput for `query_kf` plus context within `radius`; also returns the actor rows (into
        this GraphData) of the batch's actors, in batch order."""
        query_kf = query_kf.to(self.device)
        lo, hi = self.bounds(radius)
        kf = torch.unique(ranges_to_indices(lo[query_kf], hi[query_kf]))  # (K_b,) sorted
        is_query_kf = torch.isin(kf, query_kf)

        a_lo, a_hi = self.actor_offset[kf], self.actor_offset[kf + 1]
        rows = ranges_to_indices(a_lo, a_hi)  # (A_b,)
        actor_kf = torch.repeat_interleave(torch.arange(len(kf), device=self.device), a_hi - a_lo)
        o_lo, o_hi = self.object_offset[kf], self.object_offset[kf + 1]
        orows = ranges_to_indices(o_lo, o_hi)  # (O_b,)
        object_kf = torch.repeat_interleave(torch.arange(len(kf), device=self.device), o_hi - o_lo)

        def f(t: Tensor | None, idx: Tensor) -> Tensor | None:
            return None if t is None else t[idx].to(dtype)

        x = HeadInput(
            kf_video=self.kf_video[kf],
            kf_time=self.kf_time[kf].to(torch.float32),
            actor_feat=f(self.actor_feat, rows),
            actor_box=self.actor_box[rows].float(),
            actor_kf=actor_kf,
            is_query=is_query_kf[actor_kf],
            object_feat=f(self.object_feat, orows),
            object_box=self.object_box[orows].float(),
            object_kf=object_kf,
            object_class=self.object_class[orows],
            actor_track=self.actor_track[rows],
            actor_roi=f(self.actor_roi, rows),
            actor_temporal=f(self.actor_temporal, rows),
            context=f(self.context, kf),
            extras={k: v[rows] for k, v in self.actor_extras.items()},
        )
        if BANK_MAPS in x.extras:
            # An actor-level bank (ACAR's ACFB) holds one entry per batch actor: its keyframe index
            # is the actor's, so heads find each entry's video and time by (kf_video, kf_time).
            x.extras[BANK_KF] = actor_kf
        return x, rows


def select_actors(
    is_gt: np.ndarray, score: np.ndarray, *, boxes: str, score_threshold: float
) -> np.ndarray:
    """Which actor rows a run uses.

    boxes="gt": ground-truth boxes only; "proposals": proposals with score >= threshold;
    "gt+proposals": both (training on GT plus confident proposals with transferred labels,
    the SlowFast/LFB convention).
    """
    if boxes == "gt":
        return is_gt.copy()
    prop = (~is_gt) & (score >= score_threshold)
    if boxes == "proposals":
        return prop
    if boxes == "gt+proposals":
        return is_gt | prop
    raise ValueError(f"unknown box selection {boxes!r}; valid: gt, proposals, gt+proposals")


def build_graph_data(
    tables,
    *,
    backbones: list[str],
    combine: str,
    select: np.ndarray,
    levels: frozenset[str] = frozenset(),
    object_feature: str | None = "base/object_feature",
    track_array: str = "base/actor_track",
    num_object_classes: int = 0,
    device: torch.device | str = "cpu",
) -> GraphData:
    """Filter a store's `Tables` to the selected actors and move it to `device`.

    backbones: groups whose `actor_pooled` is the actor feature; with two, `combine` is "mean"
    (STAGE Table 3 averages SlowFast 16x8 and 8x8 features) or "concat".
    """
    data = tables.data
    sel = torch.from_numpy(np.asarray(select, dtype=bool))
    kf_count = len(tables.kf_time)
    actor_kf_all = tables.actor_kf
    counts = torch.bincount(actor_kf_all[sel], minlength=kf_count)
    actor_offset = torch.zeros(kf_count + 1, dtype=torch.long)
    actor_offset[1:] = torch.cumsum(counts, 0)

    feats = []
    for b in backbones:
        key = f"{b}/actor_pooled"
        if key not in data:
            raise KeyError(f"store has no features {key!r}; loaded arrays: {sorted(data)}")
        feats.append(data[key][sel])
    if len(feats) == 1:
        actor_feat = feats[0]
    elif combine == "mean":
        if len({f.shape[1] for f in feats}) != 1:
            raise ValueError(f"--combine mean needs equal feature dims, got {[f.shape[1] for f in feats]}")
        actor_feat = (sum(f.float() for f in feats) / len(feats)).to(feats[0].dtype)
    elif combine == "concat":
        actor_feat = torch.cat(feats, dim=1)
    else:
        raise ValueError(f"unknown combine {combine!r}; valid: mean, concat")

    num_objects = int(tables.kf_object_offset[-1])
    if object_feature and object_feature in data and data[object_feature].shape[-1] > 0:
        object_feat = data[object_feature]
    elif num_object_classes > 0:
        # Objects given as boxes and classes only (no detector features): a one-hot of the class is
        # the most a head can know about them.
        cls = data["base/object_class"].long().clamp(0, num_object_classes - 1)
        object_feat = torch.nn.functional.one_hot(cls, num_object_classes).to(torch.float16)
    else:
        object_feat = torch.zeros(num_objects, 0, dtype=torch.float16)

    def level(name: str) -> Tensor | None:
        if name not in levels:
            return None
        key = f"{backbones[0]}/{name}"
        if key not in data:
            raise KeyError(f"the head needs {key!r} but the store does not hold it (extract with --save)")
        return data[key] if name == "kf_context" else data[key][sel]

    track = data.get(track_array, data.get("base/actor_track"))
    rows = torch.nonzero(sel).flatten()
    g = GraphData(
        video_names=list(tables.video_names),
        kf_video=tables.kf_video.long(),
        kf_time=tables.kf_time.double(),
        actor_offset=actor_offset,
        object_offset=tables.kf_object_offset.long(),
        actor_feat=actor_feat,
        actor_box=data["base/actor_box"][sel].float(),
        actor_labels=data["base/actor_labels"][sel],
        actor_score=data["base/actor_score"][sel].float(),
        actor_is_gt=data["base/actor_is_gt"][sel].bool(),
        actor_track=(track[sel] if track is not None else torch.full((len(rows),), -1)).long(),
        actor_row=rows,
        object_feat=object_feat,
        object_box=data["base/object_box"].float(),
        object_class=data["base/object_class"].long(),
        actor_roi=level("actor_roi"),
        actor_temporal=level("actor_temporal"),
        context=level("kf_context"),
    )
    return _to(g, device)


def _to(g: GraphData, device) -> GraphData:
    for name, value in vars(g).items():
        if isinstance(value, Tensor):
            setattr(g, name, value.to(device))
    g.actor_extras = {k: v.to(device) for k, v in g.actor_extras.items()}
    return g
