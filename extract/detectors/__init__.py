"""Person detectors and the Visual Genome object detector, chosen by name.

Contract (docs/DESIGN.md, "Detector API"):

- A person detector is called as ``det(frames, keys=None)`` with ``frames: Tensor (B, 3, H, W)``
  float RGB in [0, 1] and returns ``list[Detections]`` (one per frame, boxes normalised x1y1x2y2).
- An object detector is called the same way and returns ``list[ObjectDetections]``; it has
  ``.class_names: list[str]`` and ``.feature_dim: int`` (0 when it gives no features).
- ``keys`` is an optional list of ``(video, timestamp_seconds)``, one per frame. Detectors that run a
  network ignore it; the ``precomputed`` detectors need it (they look detections up by keyframe).
- What a job asks of a detector beyond the call is declared once, in ``PersonDetector`` and
  ``ObjectDetector``: ``needs_frames`` (False: frames may be None, nothing is decoded for it) and
  ``missing`` (the keys a lookup found no record for; always empty for a network).

Every factory takes flat keyword arguments; an unknown name raises ``KeyError`` listing the valid
names. Factories that need detectron2 import it only when called.

The contract's types are defined in ``types`` (the detector modules import them from there) and
re-exported here; this package imports the detector modules, never the other way round.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor

from .types import (Detections, ObjectDetections, ObjectDetector, PersonDetector, empty_detections,
                    empty_object_detections)


class NoObjectDetector:
    """`--objects none`: every frame has no objects (heads then see O = 0)."""

    class_names: list[str] = []
    feature_dim: int = 0
    needs_frames = False
    missing: Sequence[tuple[str, int]] = ()

    def __init__(self, feature_dim: int = 0, device: str = "cpu"):
        self.feature_dim = int(feature_dim)
        self.device = device

    def __call__(self, frames: Tensor | None, keys=None) -> list[ObjectDetections]:
        n = len(keys) if frames is None else frames.shape[0]
        return [empty_object_detections(self.feature_dim, self.device) for _ in range(n)]


# ----------------------------------------------------------------------------- factories

def _torchvision_person(**kw):
    from .person import TorchvisionPersonDetector
    return TorchvisionPersonDetector(**kw)


def _detectron2_person(**kw):
    from .d2 import Detectron2PersonDetector
    return Detectron2PersonDetector(**kw)


def _precomputed_person(**kw):
    from .precomputed import PrecomputedPersonDetector
    return PrecomputedPersonDetector(**kw)


def _vg_objects(**kw):
    from .vg import VGDetector
    return VGDetector.from_checkpoint(**kw)


def _vg_detectron2_objects(**kw):
    from .d2 import Detectron2VGDetector
    return Detectron2VGDetector(**kw)


def _precomputed_objects(**kw):
    from .precomputed import PrecomputedObjectDetector
    return PrecomputedObjectDetector(**kw)


def _no_objects(**kw):
    return NoObjectDetector(**kw)


PERSON_DETECTORS: dict[str, Callable[..., PersonDetector]] = {
    "torchvision": _torchvision_person,
    "detectron2": _detectron2_person,
    "precomputed": _precomputed_person,
}

OBJECT_DETECTORS: dict[str, Callable[..., ObjectDetector]] = {
    "vg": _vg_objects,
    "vg-detectron2": _vg_detectron2_objects,
    "precomputed": _precomputed_objects,
    "none": _no_objects,
}


def _build(registry: dict, what: str, name: str, kw: dict):
    if name not in registry:
        raise KeyError(f"unknown {what} {name!r}; valid names: {sorted(registry)}")
    return registry[name](**kw)


def build_person_detector(name: str, **kwargs):
    """Person detector by name (`torchvision`, `detectron2`, `precomputed`)."""
    return _build(PERSON_DETECTORS, "person detector", name, kwargs)


def build_object_detector(name: str, **kwargs):
    """Object detector by name (`vg`, `vg-detectron2`, `precomputed`, `none`)."""
    return _build(OBJECT_DETECTORS, "object detector", name, kwargs)


__all__ = [
    "Detections", "ObjectDetections", "NoObjectDetector", "PERSON_DETECTORS", "OBJECT_DETECTORS",
    "build_person_detector", "build_object_detector", "empty_detections", "empty_object_detections",
]
