"""torchvision Faster R-CNN (R50-FPN v2, COCO) as a person detector.

Weights: a state_dict file as torchvision publishes it
(`fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth`), or any checkpoint holding such a state_dict under
"model" / "state_dict". The model keeps only COCO's person class (label 1).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from stagecache.core.errors import UserError
from stagecache.extract.random_init import warn_random_init
from stagecache.core.safe_pickle import torch_load

from .types import Detections
from ._common import check_frames, check_post_args, check_weights_arg, filter_people

COCO_PERSON = 1


class PersonWeightsError(UserError, ValueError):
    """A person detector weights file that is missing or not a state_dict."""


def load_state_dict_file(path: str) -> dict:
    """A torch checkpoint file -> state_dict (unwrapping "model" / "state_dict")."""
    if not os.path.isfile(path):
        raise PersonWeightsError(f"weights file not found: {path}")
    obj = torch_load(path, map_location="cpu")  # UnsafePickleError (a UserError) names the file
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise PersonWeightsError(f"{path}: expected a state_dict (dict of tensors), got {type(obj).__name__}")
    return obj


class TorchvisionPersonDetector(nn.Module):
    """Faster R-CNN R50-FPN v2 keeping people: score >= score_thresh, NMS, at most max_per_frame."""

    needs_frames = True
    missing: tuple = ()  # a network finds every keyframe

    def __init__(self, *, weights: str | None = None, random_init: bool = False,
                 score_thresh: float = 0.8, nms_thresh: float = 0.5, max_per_frame: int = 50,
                 min_size: int = 800, max_size: int = 1333, rpn_pre_nms_top_n_test: int = 1000,
                 rpn_post_nms_top_n_test: int = 1000, device: str = "cpu"):
        super().__init__()
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

        check_weights_arg("torchvision person detector", weights, random_init)
        check_post_args("torchvision person detector", score_thresh, nms_thresh, max_per_frame)
        self.score_thresh, self.nms_thresh, self.max_per_frame = score_thresh, nms_thresh, max_per_frame
        # The model's own thresholds are set loose so that ours (applied to people only) decide.
        self.model = fasterrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=91, min_size=min_size, max_size=max_size,
            box_score_thresh=min(0.05, score_thresh), box_detections_per_img=max(100, 2 * max_per_frame),
            rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=rpn_post_nms_top_n_test)
        self.random_init = random_init
        if random_init:
            warn_random_init("torchvision person detector")
        if weights is not None:
            sd = load_state_dict_file(weights)
            try:
                self.model.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise ValueError(f"{weights}: not a torchvision fasterrcnn_resnet50_fpn_v2 (COCO, 91 classes) "
                                 f"state_dict: {str(e)[:500]}") from e
        self.model.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def forward(self, frames: Tensor, keys=None) -> list[Detections]:
        check_frames(frames)
        if self.random_init:
            warn_random_init("torchvision person detector")
        h, w = frames.shape[-2:]
        x = frames.to(self.device, torch.float32)
        use_amp = self.device.type == "cuda"
        with torch.autocast("cuda", enabled=use_amp):
            outs = self.model(list(x))
        return [filter_people(o["boxes"].float(), o["scores"].float(), o["labels"], person_label=COCO_PERSON,
                              width=w, height=h, score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                              max_per_frame=self.max_per_frame) for o in outs]
