"""Post-processing of the VG detector's RoI-head outputs, chosen by name (`VG_POSTPROCESS`).

Both the built-in detector (`vg.VGDetector`) and the detectron2 one (`d2.Detectron2VGDetector`) end
here, so the two paths keep the same objects for the same weights whichever is chosen.

- `caffe` (the default, `postprocess_vg`): bottom-up attention's Caffe feature extraction
  (generate_tsv.py): per-class NMS (`nms_thresh`, 0.3) over the (proposal, class) pairs with
  score >= `score_thresh`; each proposal keeps its best surviving class, so a proposal is one object
  at most; proposals ranked by that score, at most `max_objects`, at least `min_objects` (filled with
  the best remaining proposals).
- `fork-demo` (`postprocess_fork_demo`): what py-bottom-up-attention's feature-extraction demo
  notebooks (demo/demo_feature_extraction*.ipynb, commit 85ec9b7) do: the top `max_objects`
  (proposal, class) pairs with score > `score_thresh` (strictly) after per-class NMS, the NMS IoU
  raised 0.5, 0.6, ... 0.9 until exactly `max_objects` pairs are kept (the last try's pairs
  otherwise). One proposal may appear several times, once per class; there is no fill-in.

In both, an object's feature is its proposal's pooled feature and its attribute the best of the
first `num_attrs` attribute probabilities (the last logit is "no attribute").
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from .types import ObjectDetections
from ._common import normalise_boxes

SCALE_CLAMP = math.log(1000.0 / 16)
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # the RoI head's Box2BoxTransform weights
# The demo's schedule, np.arange(0.5, 1.0, 0.1): each threshold tried until enough pairs survive.
FORK_DEMO_NMS = (0.5, 0.6, 0.7, 0.8, 0.9)


def apply_deltas(deltas: Tensor, boxes: Tensor, weights: tuple[float, float, float, float]) -> Tensor:
    """detectron2 Box2BoxTransform: (N, k*4) deltas on (N, 4) boxes -> (N, k*4) boxes."""
    boxes = boxes.to(deltas.dtype)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 0] + 0.5 * w
    cy = boxes[:, 1] + 0.5 * h
    wx, wy, ww, wh = weights
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=SCALE_CLAMP)
    dh = (deltas[:, 3::4] / wh).clamp(max=SCALE_CLAMP)
    pcx, pcy = dx * w[:, None] + cx[:, None], dy * h[:, None] + cy[:, None]
    pw, ph = torch.exp(dw) * w[:, None], torch.exp(dh) * h[:, None]
    out = torch.stack((pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph), dim=2)
    return out.reshape(deltas.shape)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """(..., 4) clipped to [0, width] x [0, height] (detectron2 Boxes.clip)."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def class_scores_and_boxes(props: Tensor, cls_logits: Tensor, deltas: Tensor, hw: tuple[int, int],
                           box_source: str) -> tuple[Tensor, Tensor]:
    """(P, C) class probabilities without background (last) and (P, C, 4) candidate pixel boxes:
    class-regressed and clipped (`regressed`) or the proposal itself (`proposal`)."""
    cls_logits, deltas, props = cls_logits.float(), deltas.float(), props.float()
    num_classes = cls_logits.shape[1] - 1
    scores = F.softmax(cls_logits, dim=1)[:, :-1]
    if box_source == "regressed":
        reg = apply_deltas(deltas, props, BOX_WEIGHTS)  # (P, C * 4)
        return scores, clip_boxes(reg.view(-1, num_classes, 4), *hw)
    return scores, props[:, None, :].expand(-1, num_classes, 4)


def _objects(boxes: Tensor, scores: Tensor, cls: Tensor, feats: Tensor, attr_logits: Tensor | None,
             hw: tuple[int, int]) -> ObjectDetections:
    """Kept objects: pixel boxes, scores, classes and features (one row each), plus attributes."""
    h, w = hw
    det = ObjectDetections(normalise_boxes(boxes, w, h), scores.float(), cls.long(), feats.float())
    if attr_logits is not None:
        a = F.softmax(attr_logits[:, :-1].float(), dim=1)
        det.attr_score, det.attr_id = a.max(dim=1)
    return det


def select_objects(scores: Tensor, boxes: Tensor, *, score_thresh: float, nms_thresh: float
                   ) -> tuple[Tensor, Tensor, int]:
    """Per-class NMS over (proposal, class) pairs; each proposal's best surviving class.

    scores (P, C), boxes (P, C, 4) -> ranking score (P,) (the best surviving score; proposals with
    none rank below all others), class (P,), and the number of proposals with a surviving pair.
    Only pairs with score >= score_thresh take part: greedy NMS keeps or drops a pair by the
    higher-scored pairs of its class alone, so dropping lower pairs changes no decision above it.
    """
    p_idx, c_idx = torch.nonzero(scores >= score_thresh, as_tuple=True)
    s = scores[p_idx, c_idx]
    keep = batched_nms(boxes[p_idx, c_idx].float(), s.float(), c_idx, nms_thresh)
    survived = torch.full_like(scores, -1.0)  # (P, C): score of surviving pairs, -1 elsewhere
    survived[p_idx[keep], c_idx[keep]] = s[keep]
    best, best_cls = survived.max(dim=1)
    ok = best >= 0
    # Proposals without a surviving pair rank after all others, by their best raw score (the
    # fill-in used when fewer than min_objects survive).
    raw, raw_cls = scores.max(dim=1)
    rank = torch.where(ok, best, raw - 2.0)
    return rank, torch.where(ok, best_cls, raw_cls), int(ok.sum())


def postprocess_vg(props: Tensor, cls_logits: Tensor, deltas: Tensor, feats: Tensor, attr_logits: Tensor | None,
                   hw: tuple[int, int], *, score_thresh: float, nms_thresh: float, max_objects: int,
                   min_objects: int, box_source: str) -> ObjectDetections:
    """`caffe`: one image's RoI-head outputs -> kept objects (see the module docstring).

    props (P, 4) pixels, cls_logits (P, C+1) background last, deltas (P, C*4), feats (P, D),
    attr_logits (P, n_attr+1) or None; hw is the input image size the boxes refer to.
    """
    scores, cand_boxes = class_scores_and_boxes(props, cls_logits, deltas, hw, box_source)
    rank, best_cls, n_survived = select_objects(scores, cand_boxes, score_thresh=score_thresh,
                                                nms_thresh=nms_thresh)
    n_keep = min(max(n_survived, min_objects), max_objects, scores.shape[0])
    idx = torch.argsort(rank, descending=True, stable=True)[:n_keep]
    cls = best_cls[idx]
    return _objects(cand_boxes[idx, cls], scores[idx, cls], cls, feats[idx],
                    None if attr_logits is None else attr_logits[idx], hw)


def postprocess_fork_demo(props: Tensor, cls_logits: Tensor, deltas: Tensor, feats: Tensor,
                          attr_logits: Tensor | None, hw: tuple[int, int], *, score_thresh: float,
                          max_objects: int, box_source: str,
                          nms_schedule: tuple[float, ...] = FORK_DEMO_NMS) -> ObjectDetections:
    """`fork-demo`: the top `max_objects` (proposal, class) pairs (see the module docstring);
    arguments as `postprocess_vg`'s. Pairs come in decreasing score."""
    scores, cand_boxes = class_scores_and_boxes(props, cls_logits, deltas, hw, box_source)
    p_idx, c_idx = torch.nonzero(scores > score_thresh, as_tuple=True)
    s, b = scores[p_idx, c_idx], cand_boxes[p_idx, c_idx].float()
    keep = p_idx[:0]
    for iou in nms_schedule:  # a looser NMS only when the tighter one left too few pairs
        keep = batched_nms(b, s, c_idx, float(iou))[:max_objects]  # sorted by decreasing score
        if keep.numel() == max_objects:
            break
    p = p_idx[keep]
    return _objects(b[keep], s[keep], c_idx[keep], feats[p], None if attr_logits is None else attr_logits[p], hw)


VG_POSTPROCESS = ("caffe", "fork-demo")


def check_postprocess(method: str, min_objects: int) -> None:
    """A known method; `min_objects` (the fill-in) is the Caffe method's only."""
    if method not in VG_POSTPROCESS:
        raise ValueError(f"unknown VG post-processing {method!r}; valid: {list(VG_POSTPROCESS)}")
    if method == "fork-demo" and min_objects > 0:
        raise ValueError(f"min_objects ({min_objects}) fills in objects for the 'caffe' post-processing "
                         "only; 'fork-demo' keeps at most max_objects pairs, with no fill-in")


def postprocess(method: str, props: Tensor, cls_logits: Tensor, deltas: Tensor, feats: Tensor,
                attr_logits: Tensor | None, hw: tuple[int, int], *, score_thresh: float, nms_thresh: float,
                max_objects: int, min_objects: int, box_source: str) -> ObjectDetections:
    """The post-processing named `method` (`VG_POSTPROCESS`); `fork-demo` has its own NMS schedule
    and no fill-in, so it does not read `nms_thresh` / `min_objects`."""
    if method == "fork-demo":
        return postprocess_fork_demo(props, cls_logits, deltas, feats, attr_logits, hw, score_thresh=score_thresh,
                                     max_objects=max_objects, box_source=box_source)
    if method != "caffe":
        raise ValueError(f"unknown VG post-processing {method!r}; valid: {list(VG_POSTPROCESS)}")
    return postprocess_vg(props, cls_logits, deltas, feats, attr_logits, hw, score_thresh=score_thresh,
                          nms_thresh=nms_thresh, max_objects=max_objects, min_objects=min_objects,
                          box_source=box_source)
