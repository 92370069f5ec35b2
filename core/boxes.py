"""Boxes: the one pairwise IoU, and the named sets of actor boxes ("gt", "proposals", "gt+proposals").

Boxes are `x1, y1, x2, y2` rows (normalised in the store, pixels in a few tools; IoU does not care).
Modelled on detectron2's `structures/boxes.py`, which keeps one `pairwise_iou` for the whole code
base: here `box_iou` serves numpy callers (tracking, actor matching) and `box_iou_torch` the heads.
"""
from __future__ import annotations

import numpy as np

__all__ = ["box_iou", "box_iou_torch", "box_keys", "BOX_SETS", "check_box_set", "select_actors"]

# Which actor rows a command works on: ground-truth people, detector proposals, or both.
def box_keys(box: np.ndarray) -> np.ndarray:
    """(N, 4) int64 keys equal for boxes that are the same to 1e-4 (a CSV's 3-4 printed decimals):
    groups the rows of one box in a predictions file (one row per (box, class))."""
    return np.round(np.asarray(box, np.float64) * 1e4).astype(np.int64)


BOX_SETS = ("gt", "proposals", "gt+proposals")


def box_iou(a, b, *, dtype=np.float64) -> np.ndarray:
    """(N, 4), (M, 4) -> (N, M) IoU, computed in `dtype` (float64 unless asked).

    Sides are clipped at 0 (an inverted box has area 0); a pair whose union is empty has IoU 0.
    """
    a = np.asarray(a, dtype=dtype).reshape(-1, 4)
    b = np.asarray(b, dtype=dtype).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_iou_torch(a, b):
    """(N, 4), (M, 4) tensors -> (N, M) IoU on their device and dtype (differentiable).

    torchvision's `box_iou` for well-formed boxes; a pair whose union is empty (two zero-area
    boxes) gets 0 rather than torchvision's NaN.
    """
    import torch
    from torchvision.ops import box_iou as tv_box_iou

    iou = tv_box_iou(a, b)
    return torch.nan_to_num(iou, nan=0.0)


def check_box_set(value: str, what: str = "boxes") -> str:
    """`value` if it names a box set, else ValueError listing the valid names."""
    if value not in BOX_SETS:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(BOX_SETS)}")
    return value


def select_actors(is_gt: np.ndarray, score: np.ndarray, *, boxes: str, score_threshold: float) -> np.ndarray:
    """Which actor rows a run uses: (A,) bool.

    boxes="gt": ground-truth boxes only; "proposals": proposals with score >= threshold;
    "gt+proposals": both (training on GT plus confident proposals with transferred labels,
    the SlowFast/LFB convention).
    """
    check_box_set(boxes)
    if boxes == "gt":
        return is_gt.copy()
    prop = (~is_gt) & (score >= score_threshold)
    return prop if boxes == "proposals" else is_gt | prop
