"""Detectors that run through detectron2 (imported only here, only when one is built).

- `Detectron2PersonDetector`: any detectron2 detection config + weights (e.g. a COCO Faster R-CNN,
  or the AVA person detector of LFB / PySlowFast, a Detectron model detectron2 can load), keeping
  one class (COCO person = contiguous id 0 in detectron2).
- `Detectron2VGDetector`: the bottom-up-attention VG model built by py-bottom-up-attention's
  detectron2 (its config `configs/VG-Detection/faster_rcnn_R_101_C4_attr_caffemaxpool.yaml` needs
  the VG changes that fork makes to `Res5ROIHeads`, switched by its config keys `MODEL.CAFFE_MAXPOOL`
  and `MODEL.ROI_BOX_HEAD.RES5HALVE`); post-processing is the built-in detector's, chosen by the
  same `vg_postprocess` name (`vg_postprocess.postprocess`), so the two paths give the same objects
  for the same weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from stagecache.core.errors import UserError
from stagecache.core.safe_pickle import load_pickle, torch_load

from .types import Detections, ObjectDetections
from ._common import check_frames, check_post_args, filter_people
from .vg import PIXEL_MEAN_BGR, read_class_names
from .vg_postprocess import check_postprocess, postprocess

INSTALL_HINT = (
    "detectron2 is not installed. Install it (it needs a compiler and a torch build matching your CUDA) "
    "with:  pip install 'git+https://github.com/facebookresearch/detectron2.git'  (see "
    "https://detectron2.readthedocs.io/en/latest/tutorials/install.html); for the VG detector install "
    "py-bottom-up-attention's detectron2 fork instead (git clone https://github.com/airsplay/"
    "py-bottom-up-attention && pip install -e py-bottom-up-attention). Without detectron2, use "
    "--person-detector torchvision and --objects vg (built-in, same weights file).")


def require_detectron2():
    try:
        import detectron2  # noqa: F401
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} (import error: {e})") from e
    return get_cfg, build_model, DetectionCheckpointer


VG_FORK = "airsplay/py-bottom-up-attention"
# Config keys only that fork defines (its VG trunk and RoI head); upstream detectron2 has neither.
VG_FORK_KEYS = ("MODEL.CAFFE_MAXPOOL", "MODEL.ROI_BOX_HEAD.RES5HALVE")


def is_vg_fork(cfg) -> bool:
    """Whether a detectron2 config (`get_cfg()`) is py-bottom-up-attention's: it has `VG_FORK_KEYS`."""
    def has(key: str) -> bool:
        node = cfg
        for part in key.split("."):
            if part not in node:
                return False
            node = node[part]
        return True
    return all(has(k) for k in VG_FORK_KEYS)


class WeightsFormatError(UserError, ValueError):
    """A detectron2 weights file without the structure its extension promises."""


def read_d2_weights(path: str, *, trust_pickle: bool = False) -> dict:
    """What detectron2's `DetectionCheckpointer._load_file` returns for `path`, read without running
    code from the file: detectron2 model-zoo `.pkl` (`{"model", "__author__", ...}`) as is; Caffe2 /
    Detectron `.pkl` (`{"blobs": ...}` or bare blobs) as `{"model": blobs without *_momentum,
    "__author__": "Caffe2", "matching_heuristics": True}`; pycls `.pyth` as its `model_state`
    without num_batches_tracked; any other torch file as `{"model": ..., "matching_heuristics":
    True}`. `UnsafePickleError` for a file needing more than plain data, unless `trust_pickle`."""
    p = Path(path)
    if p.suffix == ".pkl":
        data = load_pickle(p, trust=trust_pickle, encoding="latin1")
        if not isinstance(data, dict):
            raise WeightsFormatError(f"{path}: a detectron2 / Caffe2 .pkl must hold a dict, got {type(data).__name__}")
        if "model" in data and "__author__" in data:
            return data
        data = data.get("blobs", data)  # Detection models have "blobs", ImageNet ones do not
        return {"model": {k: v for k, v in data.items() if not str(k).endswith("_momentum")},
                "__author__": "Caffe2", "matching_heuristics": True}
    data = torch_load(p, map_location="cpu", trust=trust_pickle)
    if p.suffix == ".pyth":
        if not isinstance(data, dict) or "model_state" not in data:
            raise WeightsFormatError(f"{path}: a pycls .pyth must hold 'model_state'")
        return {"model": {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")},
                "__author__": "pycls", "matching_heuristics": True}
    if not isinstance(data, dict) or "model" not in data:
        data = {"model": data}
    return {**data, "matching_heuristics": True}


def _build(config: str, weights: str, device: str, opts, trust_pickle: bool = False):
    get_cfg, build_model, DetectionCheckpointer = require_detectron2()

    class SafeCheckpointer(DetectionCheckpointer):
        """detectron2's loading (name matching, Caffe2 conversion) of a file read by `read_d2_weights`."""

        def _load_file(self, filename):
            return read_d2_weights(filename, trust_pickle=trust_pickle)

    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(list(opts or ()))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = weights
    model = build_model(cfg)
    SafeCheckpointer(model).load(weights)
    return cfg, model.eval()


def _resize(frames: Tensor, min_size: int, max_size: int) -> Tensor:
    h, w = frames.shape[-2:]
    s = min_size / min(h, w)
    if max(h, w) * s > max_size:
        s = max_size / max(h, w)
    nh, nw = int(round(h * s)), int(round(w * s))
    if (nh, nw) == (h, w):
        return frames
    return F.interpolate(frames, size=(nh, nw), mode="bilinear", align_corners=False)


class Detectron2PersonDetector:
    """A detectron2 detector keeping `person_class`; threshold, NMS and cap as the torchvision one."""

    needs_frames = True
    missing: tuple = ()  # a network finds every keyframe

    def __init__(self, *, config: str, weights: str, score_thresh: float = 0.8, nms_thresh: float = 0.5,
                 max_per_frame: int = 50, person_class: int = 0, device: str = "cpu", opts=(),
                 trust_pickle: bool = False):
        check_post_args("detectron2 person detector", score_thresh, nms_thresh, max_per_frame)
        self.cfg, self.model = _build(config, weights, device, opts, trust_pickle)
        self.score_thresh, self.nms_thresh, self.max_per_frame = score_thresh, nms_thresh, max_per_frame
        self.person_class = person_class
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, frames: Tensor, keys=None) -> list[Detections]:
        check_frames(frames)
        h, w = frames.shape[-2:]
        x = _resize(frames.to(self.device, torch.float32), self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST)
        if self.cfg.INPUT.FORMAT == "BGR":
            x = x.flip(1)
        inputs = [{"image": img * 255.0, "height": h, "width": w} for img in x]
        out = []
        for o in self.model(inputs):
            inst = o["instances"].to("cpu")
            out.append(filter_people(inst.pred_boxes.tensor.float(), inst.scores.float(), inst.pred_classes,
                                     person_label=self.person_class, width=w, height=h,
                                     score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                                     max_per_frame=self.max_per_frame).to(self.device))
        return out


class Detectron2VGDetector:
    """The VG detector run by detectron2 modules, post-processed like the built-in one."""

    feature_dim = 2048
    needs_frames = True
    missing: tuple = ()  # a network finds every keyframe

    def __init__(self, *, config: str, weights: str, vg_classes: str | None = None, min_size: int = 600,
                 max_size: int = 1000, score_thresh: float = 0.2, nms_thresh: float = 0.3,
                 max_objects: int = 25, min_objects: int = 0, box_source: str = "regressed",
                 vg_postprocess: str = "caffe", device: str = "cpu", opts=(), trust_pickle: bool = False):
        check_postprocess(vg_postprocess, min_objects)
        get_cfg, _, _ = require_detectron2()
        if not is_vg_fork(get_cfg()):
            raise ImportError(f"the installed detectron2 is not {VG_FORK}'s fork (no {' / '.join(VG_FORK_KEYS)} "
                              f"config keys), which the VG detector needs. {INSTALL_HINT}")
        self.cfg, self.model = _build(config, weights, device, opts, trust_pickle)
        self.num_classes = self.cfg.MODEL.ROI_HEADS.NUM_CLASSES
        self.class_names = read_class_names(vg_classes, self.num_classes)
        self.min_size, self.max_size = min_size, max_size
        self.post = dict(score_thresh=score_thresh, nms_thresh=nms_thresh, max_objects=max_objects,
                         min_objects=min_objects, box_source=box_source)
        self.vg_postprocess = vg_postprocess
        self.device = torch.device(device)

    def preprocess(self, frames: Tensor) -> Tensor:
        x = _resize(frames.to(self.device, torch.float32), self.min_size, self.max_size)
        mean = torch.tensor(PIXEL_MEAN_BGR, device=self.device).view(1, 3, 1, 1)
        return x.flip(1) * 255.0 - mean

    @torch.no_grad()
    def __call__(self, frames: Tensor, keys=None) -> list[ObjectDetections]:
        check_frames(frames)
        return self.detect(self.preprocess(frames))

    @torch.no_grad()
    def detect(self, images: Tensor) -> list[ObjectDetections]:
        """Preprocessed (B, 3, h, w) images (as `VGDetector.preprocess` makes them) -> objects."""
        from detectron2.structures import ImageList

        m = self.model
        hw = tuple(images.shape[-2:])
        feats = m.backbone(images)
        names = m.roi_heads.in_features
        props, _ = m.proposal_generator(ImageList(images, [hw] * images.shape[0]), feats, None)
        boxes = [p.proposal_boxes for p in props]
        x = m.roi_heads._shared_roi_transform([feats[f] for f in names], boxes).mean(dim=(2, 3))
        pred = m.roi_heads.box_predictor(x)
        cls_logits, deltas = pred[0], pred[-1]
        attr = pred[1] if len(pred) == 3 else None
        out, start = [], 0
        for b in boxes:
            n = len(b)
            sl = slice(start, start + n)
            start += n
            out.append(postprocess(self.vg_postprocess, b.tensor, cls_logits[sl], deltas[sl], x[sl],
                                   None if attr is None else attr[sl], hw, **self.post))
        return out
