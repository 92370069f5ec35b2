"""What a detector returns (`Detections`, `ObjectDetections`, their empty forms) and the protocols
person and object detectors satisfy (`PersonDetector`, `ObjectDetector`); the contract is in the
package's docstring (extract/detectors/__init__.py), which re-exports these names. Here, not in the
package, so that the detector modules import them without importing the package that imports them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from torch import Tensor


@dataclass
class Detections:
    """People in one frame."""

    box: Tensor  # (N, 4) float32 normalised x1, y1, x2, y2
    score: Tensor  # (N,) float32
    class_id: Tensor  # (N,) long: detector class id of the kept class (e.g. COCO person = 1)

    def __len__(self) -> int:
        return int(self.box.shape[0])

    def to(self, device) -> "Detections":
        return Detections(self.box.to(device), self.score.to(device), self.class_id.to(device))


@dataclass
class ObjectDetections:
    """Objects in one frame with one feature vector per box."""

    box: Tensor  # (N, 4) float32 normalised x1, y1, x2, y2
    score: Tensor  # (N,) float32
    class_id: Tensor  # (N,) long: index into the detector's `class_names`, -1 unknown
    feature: Tensor  # (N, D) float32; D = detector.feature_dim (0 when no features)
    attr_id: Tensor | None = None  # (N,) long: best attribute (VG attribute index), when computed
    attr_score: Tensor | None = None  # (N,) float32

    def __len__(self) -> int:
        return int(self.box.shape[0])

    def to(self, device) -> "ObjectDetections":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ObjectDetections(mv(self.box), mv(self.score), mv(self.class_id), mv(self.feature),
                                mv(self.attr_id), mv(self.attr_score))


def empty_detections(device="cpu") -> Detections:
    return Detections(torch.zeros(0, 4, device=device), torch.zeros(0, device=device),
                      torch.zeros(0, dtype=torch.long, device=device))


def empty_object_detections(feature_dim: int, device="cpu") -> ObjectDetections:
    return ObjectDetections(torch.zeros(0, 4, device=device), torch.zeros(0, device=device),
                            torch.zeros(0, dtype=torch.long, device=device),
                            torch.zeros(0, feature_dim, device=device))


class PersonDetector(Protocol):
    needs_frames: bool  # False: called with frames=None (looks detections up by key)
    missing: Sequence[tuple[str, int]]  # (video, timestamp ms) keys a lookup found no record for

    def __call__(self, frames: Tensor | None, keys=None) -> list[Detections]: ...


class ObjectDetector(Protocol):
    class_names: list[str]
    feature_dim: int  # 0 when it gives no features
    needs_frames: bool
    missing: Sequence[tuple[str, int]]

    def __call__(self, frames: Tensor | None, keys=None) -> list[ObjectDetections]: ...
