"""`HeadInput`: the one forward input of every head.

A batch is a set of keyframes (possibly from several videos) with their actors and objects laid
out flat, as in the store: actors of keyframe k are the rows whose `actor_kf == k`. The training
loop asks for a set of *query* keyframes; the data pipeline adds every keyframe of the same video
within the head's `temporal_radius`, so that heads can find temporal neighbours by
(video, timestamp) and never by position in the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor


@dataclass
class HeadInput:
    # Keyframes of the batch.
    kf_video: Tensor  # (K,) long: video index (only equality matters)
    kf_time: Tensor  # (K,) float: timestamp in seconds

    # Actors (people), flat over keyframes.
    actor_feat: Tensor  # (A, C_a) float: pooled backbone feature
    actor_box: Tensor  # (A, 4) float: normalised x1, y1, x2, y2
    actor_kf: Tensor  # (A,) long: index into the keyframe arrays
    # (A,) bool: actors whose predictions are wanted (loss / output). A head returns (A, L) logits,
    # but only these rows are read: heads whose bank pulls in many other keyframes (tonly, sonly,
    # lfb, igmn) leave the other rows as placeholders instead of computing them.
    is_query: Tensor

    # Objects, flat over keyframes. O may be 0 (empty tensors with the right trailing dims).
    object_feat: Tensor  # (O, C_o) float
    object_box: Tensor  # (O, 4) float
    object_kf: Tensor  # (O,) long
    object_class: Tensor  # (O,) long: detector class id (-1 unknown)

    # Optional levels (present when the store holds them and the head requires them).
    actor_track: Tensor | None = None  # (A,) long: identity / track id, -1 unknown
    actor_roi: Tensor | None = None  # (A, C, k, k) float: per-box RoI map
    actor_temporal: Tensor | None = None  # (A, T, C) float: per-box temporal sequence
    context: Tensor | None = None  # (K, C, H, W) float: per-keyframe context map
    extras: dict[str, Tensor] = field(default_factory=dict)  # head-specific inputs (e.g. feature banks)

    @property
    def num_actors(self) -> int:
        return self.actor_feat.shape[0]

    @property
    def num_objects(self) -> int:
        return self.object_feat.shape[0]

    @property
    def num_keyframes(self) -> int:
        return self.kf_video.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "HeadInput":
        """Move every tensor; floating tensors are cast to `dtype` when given."""

        def move(t):
            if t is None:
                return None
            if dtype is not None and t.is_floating_point() and t is not self.kf_time:
                return t.to(device=device, dtype=dtype, non_blocking=True)
            return t.to(device=device, non_blocking=True)

        kw = {f.name: move(getattr(self, f.name)) for f in fields(self) if f.name != "extras"}
        kw["extras"] = {k: move(v) for k, v in self.extras.items()}
        return replace(self, **kw)


def box_centres(box: Tensor) -> Tensor:
    """(N, 4) x1y1x2y2 -> (N, 2) centres."""
    return torch.stack(((box[:, 0] + box[:, 2]) * 0.5, (box[:, 1] + box[:, 3]) * 0.5), dim=1)


def box_geometry(box: Tensor) -> Tensor:
    """(N, 4) x1y1x2y2 -> (N, 4) [h, w, xc, yc], the box descriptor STAGE appends to features."""
    h = box[:, 3] - box[:, 1]
    w = box[:, 2] - box[:, 0]
    c = box_centres(box)
    return torch.stack((h, w, c[:, 0], c[:, 1]), dim=1)
