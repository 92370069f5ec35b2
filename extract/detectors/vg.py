"""Built-in bottom-up-attention Visual Genome Faster R-CNN on torchvision components.

Architecture (py-bottom-up-attention, configs/VG-Detection/faster_rcnn_R_101_C4_attr_caffemaxpool.yaml
on detectron2's Base-RCNN-C4):

- input: BGR in [0, 255] minus PIXEL_MEAN (102.9801, 115.9465, 122.7717), std 1; shortest side
  resized to `min_size` (600), longest at most `max_size` (1000);
- trunk: torchvision ResNet-101 with FrozenBN, stride in the 1x1 convs (MSRA/Caffe), stem max-pool
  with pad 0 and ceil mode (CAFFE_MAXPOOL); res2..res4 -> stride-16 1024-channel map;
- RPN on res4: 3x3 conv to 512 channels (HID_CHANNELS), objectness + deltas for 4 sizes
  (64, 128, 256, 512) x 3 aspect ratios (0.5, 1, 2); 6000 pre-NMS, NMS 0.7, 1000 post-NMS;
- RoI head: RoIPool 14x14 at 1/16 -> res5 with stride 1 and dilation 2 in every 3x3 conv (the
  Caffe model's res5) -> mean pool -> 2048-d feature -> cls_score (1601, background last) and
  class-specific bbox_pred (1600 * 4, weights 10, 10, 5, 5); optional attribute head
  (class embedding 256 -> fc 512 -> 401 attribute logits).

Post-processing (`vg_postprocess`, extract/detectors/vg_postprocess.py): `caffe` (the default)
follows bottom-up attention's Caffe feature extraction (generate_tsv.py): per-class NMS (0.3) over
the (proposal, class) pairs with score >= `score_thresh` (0.2); each proposal keeps its best
surviving class; proposals are ranked by that score and at most `max_objects` (default 25, the mean
number of objects per clip STAGE reports) are kept, at least `min_objects` (default 0; the original
used 10..100, filling with the best remaining proposals). `fork-demo` keeps the top `max_objects`
(proposal, class) pairs as py-bottom-up-attention's demo does. The feature of an object is the
pooled res5 feature of its proposal; its box is the class-regressed box (`box_source="regressed"`, as
py-bottom-up-attention's demo) or the proposal itself (`"proposal"`, as the Caffe generate_tsv.py).
Attributes: softmax over the first 400 attribute logits (the last is "no attribute").
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet101, resnet50
from torchvision.ops import FrozenBatchNorm2d, RoIAlign, RoIPool, nms

from stagecache.extract.random_init import warn_random_init

from .types import ObjectDetections
from ._common import check_frames, check_weights_arg, pixel_boxes
from .vg_convert import convert_d2_state, read_d2_checkpoint
# postprocess_vg and the box helpers are re-exported: the detectron2 path and callers import them here.
from .vg_postprocess import (VG_POSTPROCESS, apply_deltas, check_postprocess, clip_boxes,  # noqa: F401
                             postprocess, postprocess_fork_demo, postprocess_vg, select_objects)

PIXEL_MEAN_BGR = (102.9801, 115.9465, 122.7717)


def read_class_names(path: str | None, num_classes: int) -> list[str]:
    """VG object names (objects_vocab.txt: one name per line; synonyms 'a,b' keep the first)."""
    if path is None:
        warnings.warn(f"no VG class list given (--vg-classes objects_vocab.txt): classes are named "
                      f"vg_0..vg_{num_classes - 1}", UserWarning, stacklevel=3)
        return [f"vg_{i}" for i in range(num_classes)]
    with open(path, encoding="utf-8") as f:
        names = [line.strip().split(",")[0] for line in f if line.strip()]
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names, the detector has {num_classes} classes")
    return names


def cell_anchors(sizes, ratios) -> Tensor:
    """(A, 4) anchors centred on 0, size-major then ratio (detectron2 DefaultAnchorGenerator)."""
    out = []
    for s in sizes:
        for r in ratios:
            w = math.sqrt(s * s / r)
            h = r * w
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out, dtype=torch.float32)


def grid_anchors(cell: Tensor, fh: int, fw: int, stride: int) -> Tensor:
    """(fh * fw * A, 4): location-major, anchor-minor, matching the RPN head's output layout."""
    sx = torch.arange(0, fw * stride, stride, dtype=torch.float32, device=cell.device)
    sy = torch.arange(0, fh * stride, stride, dtype=torch.float32, device=cell.device)
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    shifts = torch.stack((xx.reshape(-1), yy.reshape(-1), xx.reshape(-1), yy.reshape(-1)), dim=1)
    return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)


class RPNHead(nn.Module):
    """detectron2 StandardRPNHead with a hidden width (py-bottom-up-attention HID_CHANNELS)."""

    def __init__(self, in_channels: int, hidden: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.objectness_logits = nn.Conv2d(hidden, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(hidden, num_anchors * 4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)  # (B, A, h, w), (B, 4A, h, w)


class BoxPredictor(nn.Module):
    """cls_score / bbox_pred and the optional attribute branch of py-bottom-up-attention."""

    def __init__(self, dim: int, num_classes: int, num_attrs: int):
        super().__init__()
        self.cls_score = nn.Linear(dim, num_classes + 1)
        self.bbox_pred = nn.Linear(dim, num_classes * 4)
        self.num_attrs = num_attrs
        if num_attrs > 0:
            self.cls_embedding = nn.Embedding(num_classes + 1, dim // 8)
            self.fc_attr = nn.Linear(dim + dim // 8, dim // 4)
            self.attr_score = nn.Linear(dim // 4, num_attrs + 1)

    def attributes(self, x: Tensor, cls_logits: Tensor) -> Tensor:
        """(N, D), (N, C+1) -> (N, num_attrs + 1) attribute logits."""
        emb = self.cls_embedding(cls_logits.argmax(dim=1))
        return self.attr_score(F.relu(self.fc_attr(torch.cat((x, emb), dim=1))))


def _trunk(depth: int, caffe_maxpool: bool):
    net = {101: resnet101, 50: resnet50}[depth](weights=None, norm_layer=FrozenBatchNorm2d)
    for layer in (net.layer2, net.layer3, net.layer4):  # MSRA models: stride in the 1x1 conv
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    # VG res5: no down-sampling, dilation 2 in the 3x3 convs (RES5HALVE False).
    net.layer4[0].conv1.stride = (1, 1)
    net.layer4[0].downsample[0].stride = (1, 1)
    for block in net.layer4:
        block.conv2.padding, block.conv2.dilation = (2, 2), (2, 2)
    pool = (nn.MaxPool2d(3, 2, padding=0, ceil_mode=True) if caffe_maxpool
            else nn.MaxPool2d(3, 2, padding=1))
    stem = nn.Sequential(net.conv1, net.bn1, nn.ReLU(inplace=True), pool)
    return stem, net.layer1, net.layer2, net.layer3, net.layer4


class VGDetector(nn.Module):
    """The bottom-up-attention VG detector; call on (B, 3, H, W) RGB [0, 1] frames."""

    feature_dim = 2048
    needs_frames = True
    missing: tuple = ()  # a network finds every keyframe

    def __init__(self, *, num_classes: int = 1600, num_attrs: int = 400, depth: int = 101,
                 caffe_maxpool: bool = True, rpn_hidden: int = 512,
                 anchor_sizes: tuple[int, ...] = (64, 128, 256, 512),
                 aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0), pooler: str = "roipool",
                 pooler_resolution: int = 14, min_size: int = 600, max_size: int = 1000,
                 rpn_pre_nms_topk: int = 6000, rpn_post_nms_topk: int = 1000, rpn_nms_thresh: float = 0.7,
                 score_thresh: float = 0.2, nms_thresh: float = 0.3, max_objects: int = 25,
                 min_objects: int = 0, box_source: str = "regressed", vg_postprocess: str = "caffe",
                 class_names: list[str] | None = None, device: str = "cpu"):
        super().__init__()
        if box_source not in ("regressed", "proposal"):
            raise ValueError(f"box_source must be 'regressed' or 'proposal', got {box_source!r}")
        if pooler not in ("roipool", "roialign"):
            raise ValueError(f"pooler must be 'roipool' or 'roialign', got {pooler!r}")
        if not 0 <= min_objects <= max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        check_postprocess(vg_postprocess, min_objects)
        self.stem, self.res2, self.res3, self.res4, self.res5 = _trunk(depth, caffe_maxpool)
        self.register_buffer("cell_anchors", cell_anchors(anchor_sizes, aspect_ratios), persistent=False)
        self.rpn_head = RPNHead(1024, rpn_hidden, self.cell_anchors.shape[0])
        self.box_predictor = BoxPredictor(2048, num_classes, num_attrs)
        self.pool = (RoIPool(pooler_resolution, 1 / 16) if pooler == "roipool"
                     else RoIAlign(pooler_resolution, 1 / 16, sampling_ratio=0, aligned=True))
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.num_classes, self.num_attrs = num_classes, num_attrs
        self.min_size, self.max_size = min_size, max_size
        self.rpn_pre, self.rpn_post, self.rpn_nms = rpn_pre_nms_topk, rpn_post_nms_topk, rpn_nms_thresh
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.max_objects, self.min_objects, self.box_source = max_objects, min_objects, box_source
        self.vg_postprocess = vg_postprocess
        self.class_names = class_names or [f"vg_{i}" for i in range(num_classes)]
        self.random_init = False
        self.device = torch.device(device)
        self.eval().to(self.device)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(cls, *, weights: str | None = None, random_init: bool = False,
                        vg_classes: str | None = None, trust_pickle: bool = False, **kwargs) -> "VGDetector":
        """Build from a bottom-up-attention checkpoint (see vg_convert), or random for tests/demo.

        Class count, attribute head and RPN width are read from the checkpoint.
        `trust_pickle`: see `vg_convert.read_d2_checkpoint`.
        """
        check_weights_arg("VG object detector", weights, random_init)
        if random_init:
            n = kwargs.get("num_classes", 1600)
            model = cls(class_names=read_class_names(vg_classes, n) if vg_classes else None, **kwargs)
            model.random_init = True
            warn_random_init("VG object detector")
            return model
        arrays = read_d2_checkpoint(weights, trust_pickle=trust_pickle)
        try:
            kwargs.setdefault("num_classes", arrays["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1)
            kwargs.setdefault("rpn_hidden", arrays["proposal_generator.rpn_head.conv.weight"].shape[0])
        except KeyError as e:
            raise ValueError(f"{weights}: no {e.args[0]}; not a bottom-up-attention VG checkpoint") from None
        attr = arrays.get("roi_heads.box_predictor.attr_score.weight")
        kwargs.setdefault("num_attrs", 0 if attr is None else attr.shape[0] - 1)
        names = read_class_names(vg_classes, kwargs["num_classes"])
        model = cls(class_names=names, **kwargs)
        model.load_d2_arrays(arrays, source=weights)
        return model

    def load_d2_arrays(self, arrays, source: str = "checkpoint") -> None:
        sd = convert_d2_state(arrays, self.state_dict(), source=source)
        self.load_state_dict(sd, strict=True)
        self.random_init = False

    # ------------------------------------------------------------------ stages

    def preprocess(self, frames: Tensor) -> Tensor:
        """(B, 3, H, W) RGB [0, 1] -> (B, 3, h, w) resized BGR [0, 255] minus the pixel mean."""
        h, w = frames.shape[-2:]
        s = self.min_size / min(h, w)
        if max(h, w) * s > self.max_size:
            s = self.max_size / max(h, w)
        nh, nw = int(round(h * s)), int(round(w * s))
        x = frames.to(self.device, torch.float32)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        return x.flip(1) * 255.0 - self.pixel_mean

    def backbone(self, images: Tensor) -> Tensor:
        return self.res4(self.res3(self.res2(self.stem(images))))  # (B, 1024, h/16, w/16)

    def proposals(self, feat: Tensor, image_hw: tuple[int, int]) -> list[Tensor]:
        """RPN: res4 map -> per image (P, 4) proposals in input pixels, objectness order."""
        logits, deltas = self.rpn_head(feat)
        logits, deltas = logits.float(), deltas.float()  # box coordinates need fp32 under autocast
        b, a, fh, fw = logits.shape
        anchors = grid_anchors(self.cell_anchors, fh, fw, 16)
        logits = logits.permute(0, 2, 3, 1).reshape(b, -1)  # (B, fh*fw*A)
        deltas = deltas.view(b, a, 4, fh, fw).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
        out = []
        for i in range(b):
            k = min(self.rpn_pre, logits.shape[1])
            score, idx = logits[i].topk(k)
            boxes = clip_boxes(apply_deltas(deltas[i, idx], anchors[idx], (1.0, 1.0, 1.0, 1.0)), *image_hw)
            ok = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                  & torch.isfinite(boxes).all(1) & torch.isfinite(score))
            boxes, score = boxes[ok], score[ok]
            keep = nms(boxes, score, self.rpn_nms)[: self.rpn_post]
            out.append(boxes[keep])
        return out

    def box_features(self, feat: Tensor, boxes: list[Tensor]) -> Tensor:
        """RoI pool + res5 + mean: per-image (n_i, 4) pixel boxes -> (sum n_i, 2048)."""
        rois = torch.cat([torch.cat((torch.full_like(b[:, :1], i), b), 1) for i, b in enumerate(boxes)])
        if rois.shape[0] == 0:
            return feat.new_zeros(0, self.feature_dim)
        return self.res5(self.pool(feat.float(), rois.float())).mean(dim=(2, 3))

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def forward(self, frames: Tensor, keys=None) -> list[ObjectDetections]:
        check_frames(frames)
        if self.random_init:
            warn_random_init("VG object detector")
        images = self.preprocess(frames)
        with torch.autocast("cuda", enabled=self.device.type == "cuda"):
            return self.detect(images)

    def detect(self, images: Tensor) -> list[ObjectDetections]:
        """Detections on preprocessed images (B, 3, h, w); boxes normalised by (w, h)."""
        hw = tuple(images.shape[-2:])
        feat = self.backbone(images)
        props = self.proposals(feat, hw)
        x = self.box_features(feat, props).float()
        cls_logits = self.box_predictor.cls_score(x)
        deltas = self.box_predictor.bbox_pred(x)
        attr = self.box_predictor.attributes(x, cls_logits) if self.num_attrs > 0 else None
        out, start = [], 0
        for p in props:
            sl = slice(start, start + p.shape[0])
            start += p.shape[0]
            out.append(self.postprocess(p.float(), cls_logits[sl], deltas[sl], x[sl],
                                        None if attr is None else attr[sl], hw))
        return out

    def postprocess(self, props: Tensor, cls_logits: Tensor, deltas: Tensor, feats: Tensor,
                    attr_logits: Tensor | None, hw: tuple[int, int]) -> ObjectDetections:
        return postprocess(self.vg_postprocess, props, cls_logits, deltas, feats, attr_logits, hw,
                           score_thresh=self.score_thresh, nms_thresh=self.nms_thresh, max_objects=self.max_objects,
                           min_objects=self.min_objects, box_source=self.box_source)

    @torch.no_grad()
    def features_for_boxes(self, frame: Tensor, boxes: Tensor) -> Tensor:
        """(3, H, W) RGB [0, 1] frame and (N, 4) normalised boxes -> (N, 2048) pooled features."""
        images = self.preprocess(frame[None])
        h, w = images.shape[-2:]
        with torch.autocast("cuda", enabled=self.device.type == "cuda"):
            feat = self.backbone(images)
            return self.box_features(feat, [pixel_boxes(boxes.to(self.device), w, h)]).float()
