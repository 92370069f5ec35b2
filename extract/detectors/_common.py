"""Helpers shared by the detectors: post-processing of people, warnings, box scaling."""
from __future__ import annotations


import torch
from torch import Tensor
from torchvision.ops import nms

from .types import Detections


def check_weights_arg(what: str, weights, random_init: bool) -> None:
    if weights is None and not random_init:
        raise ValueError(f"{what}: no weights given. Pass weights=PATH (a checkpoint file), or "
                         "random_init=True for tests/demo only.")
    if weights is not None and random_init:
        raise ValueError(f"{what}: give either weights=PATH or random_init=True, not both.")


def check_frames(frames: Tensor) -> None:
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a (B, 3, H, W) float RGB tensor in [0, 1], got {shape}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be float RGB in [0, 1], got dtype {frames.dtype}")


def normalise_boxes(box: Tensor, width: float, height: float) -> Tensor:
    """(N, 4) pixel x1y1x2y2 -> (N, 4) normalised, clipped to [0, 1]."""
    scale = box.new_tensor([width, height, width, height])
    return (box / scale).clamp_(0.0, 1.0).float()


def pixel_boxes(box: Tensor, width: float, height: float) -> Tensor:
    """(N, 4) normalised -> (N, 4) pixels."""
    return box.float() * box.new_tensor([width, height, width, height], dtype=torch.float32)


def filter_people(box: Tensor, score: Tensor, label: Tensor, *, person_label: int, width: float,
                  height: float, score_thresh: float, nms_thresh: float, max_per_frame: int) -> Detections:
    """Keep one class, threshold, NMS and cap; boxes in pixels in, normalised out (score order)."""
    keep = (label == person_label) & (score >= score_thresh)
    box, score, label = box[keep], score[keep], label[keep]
    if nms_thresh < 1.0 and box.shape[0] > 0:
        k = nms(box.float(), score.float(), nms_thresh)  # sorted by decreasing score
    else:
        k = torch.argsort(score, descending=True)
    k = k[:max_per_frame]
    return Detections(normalise_boxes(box[k], width, height), score[k].float(), label[k].long())


def check_post_args(what: str, score_thresh: float, nms_thresh: float, max_per_frame: int) -> None:
    if not 0.0 <= score_thresh <= 1.0:
        raise ValueError(f"{what}: score_thresh must be in [0, 1], got {score_thresh}")
    if not 0.0 < nms_thresh <= 1.0:
        raise ValueError(f"{what}: nms_thresh must be in (0, 1], got {nms_thresh}")
    if max_per_frame < 1:
        raise ValueError(f"{what}: max_per_frame must be >= 1, got {max_per_frame}")
