"""Classification losses and the matching score functions, chosen by name."""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from stagecache.core.errors import UserError


class PoseIdsError(UserError, ValueError):
    """--pose-ids that cannot work with the loss or the store's classes."""


def bce(logits: Tensor, target: Tensor, pose_cols: Tensor) -> Tensor:
    """Sigmoid BCE over every class: the AVA loss of STAGE and SlowFast."""
    return F.binary_cross_entropy_with_logits(logits, target.float())


def pose_softmax(logits: Tensor, target: Tensor, pose_cols: Tensor) -> Tensor:
    """Softmax CE over the (mutually exclusive) pose classes, sigmoid BCE over the interactions,
    as ACAR-Net and IGMN train on AVA. Actors without a pose label only get the BCE term."""
    other = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
    other[pose_cols] = False
    loss = logits.new_zeros(())
    if bool(other.any()):
        loss = loss + F.binary_cross_entropy_with_logits(logits[:, other], target[:, other].float())
    pose_t = target[:, pose_cols].float()
    has_pose = pose_t.sum(1) > 0
    if len(pose_cols) and bool(has_pose.any()):
        # Soft targets: an AVA actor occasionally carries two pose labels; split the mass.
        p = pose_t[has_pose] / pose_t[has_pose].sum(1, keepdim=True)
        loss = loss + F.cross_entropy(logits[has_pose][:, pose_cols], p)
    return loss


def softmax(logits: Tensor, target: Tensor, pose_cols: Tensor) -> Tensor:
    """Softmax CE for single-label datasets (JHMDB-21, UCF101-24): target is one-hot."""
    return F.cross_entropy(logits, target.float().argmax(1))


LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "bce": bce,
    "pose_softmax": pose_softmax,
    "softmax": softmax,
}


def scores(logits: Tensor, loss: str, pose_cols: Tensor) -> Tensor:
    """Per-class scores in [0, 1] matching the loss the head was trained with."""
    if loss == "bce":
        return torch.sigmoid(logits)
    if loss == "softmax":
        return torch.softmax(logits, dim=1)
    if loss == "pose_softmax":
        out = torch.sigmoid(logits)
        if len(pose_cols):
            out[:, pose_cols] = torch.softmax(logits[:, pose_cols], dim=1)
        return out
    raise KeyError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")


def pose_columns(label_ids: list[int], pose_ids: list[int]) -> Tensor:
    """Columns of the pose classes in label_ids; pose ids not among the store's classes are ignored, as in training."""
    return torch.tensor([label_ids.index(i) for i in pose_ids if i in label_ids], dtype=torch.long)


def check_pose_ids(loss: str, pose_ids: list[int], label_ids: list[int], store: str) -> None:
    """`--pose-ids` against the loss and the store's label ids, before training: pose_softmax without
    any pose class of the store would silently be BCE, so it is refused; ids the store lacks among
    some it has are ignored with a warning (AVA's "1-14" on the 60-class list, which has no 2)."""
    if loss != "pose_softmax":
        if pose_ids:
            warnings.warn(f"--pose-ids {','.join(map(str, pose_ids))} are ignored: only --loss pose_softmax uses them",
                          stacklevel=2)
        return
    if not pose_ids:
        raise PoseIdsError("--loss pose_softmax needs --pose-ids (the pose class ids, AVA: 1-14)")
    missing = [i for i in pose_ids if i not in label_ids]
    if len(missing) == len(pose_ids):
        raise PoseIdsError(f"--pose-ids {','.join(map(str, pose_ids))}: none is a class of store {store} "
                           f"({len(label_ids)} classes, ids {','.join(map(str, label_ids[:20]))}{' ...' if len(label_ids) > 20 else ''})")
    if missing:
        warnings.warn(f"--pose-ids {','.join(map(str, missing))} are not classes of store {store}: ignored; the "
                      f"softmax covers {','.join(str(i) for i in pose_ids if i in label_ids)}", stacklevel=2)


def get_loss(name: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}") from None
