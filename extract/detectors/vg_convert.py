"""Checkpoint name converter for the bottom-up-attention Visual Genome Faster R-CNN.

Accepted files (the ones py-bottom-up-attention users download or produce):

- ``faster_rcnn_from_caffe_attr.pkl`` (with the attribute head) and ``faster_rcnn_from_caffe.pkl``
  (without): a pickle of ``{"model": {detectron2 parameter name: numpy array}, ...}``; other
  top-level keys ("__author__", "matching_heuristics") are ignored.
- a detectron2 training checkpoint (``model_final.pth``, torch.save of ``{"model": state_dict}``)
  of the same architecture (faster_rcnn_R_101_C4_attr_caffemaxpool.yaml).

Detectron2 names (detectron2 ResNet + py-bottom-up-attention's VG heads) map onto `VGDetector`'s own
modules, which are built from torchvision's ResNet:

=========================================================  ===========================================
detectron2                                                 `VGDetector`
=========================================================  ===========================================
backbone.stem.conv1.weight / .norm.{weight,bias,           stem.0.weight / stem.1.*
running_mean,running_var}
backbone.res{2,3,4}.{i}.conv{1,2,3}.weight / .norm.*       res{2,3,4}.{i}.conv{j}.weight / .bn{j}.*
backbone.res{2,3,4}.{i}.shortcut.weight / .norm.*          res{2,3,4}.{i}.downsample.0.weight / .1.*
roi_heads.res5.{i}....                                     res5.{i}.... (same rules)
proposal_generator.rpn_head.{conv,objectness_logits,       rpn_head.{...}.{weight,bias}
anchor_deltas}.{weight,bias}
roi_heads.box_predictor.{cls_score,bbox_pred,fc_attr,      box_predictor.{...}
attr_score}.{weight,bias}, .cls_embedding.weight
=========================================================  ===========================================

Buffers detectron2 may save that the model recomputes (pixel_mean, pixel_std, anchor cell anchors)
are ignored.
"""
from __future__ import annotations

import os
import pickle
import re

import numpy as np
import torch

from stagecache.core.safe_pickle import load_pickle, torch_load

_BN = r"(weight|bias|running_mean|running_var)"
# detectron2 -> ours. Order matters only for readability: the patterns are disjoint.
_D2_TO_OURS = [
    (re.compile(rf"^backbone\.stem\.conv1\.weight$"), lambda m: "stem.0.weight"),
    (re.compile(rf"^backbone\.stem\.conv1\.norm\.{_BN}$"), lambda m: f"stem.1.{m[1]}"),
    (re.compile(r"^(?:backbone|roi_heads)\.(res[2-5])\.(\d+)\.conv([123])\.weight$"),
     lambda m: f"{m[1]}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(rf"^(?:backbone|roi_heads)\.(res[2-5])\.(\d+)\.conv([123])\.norm\.{_BN}$"),
     lambda m: f"{m[1]}.{m[2]}.bn{m[3]}.{m[4]}"),
    (re.compile(r"^(?:backbone|roi_heads)\.(res[2-5])\.(\d+)\.shortcut\.weight$"),
     lambda m: f"{m[1]}.{m[2]}.downsample.0.weight"),
    (re.compile(rf"^(?:backbone|roi_heads)\.(res[2-5])\.(\d+)\.shortcut\.norm\.{_BN}$"),
     lambda m: f"{m[1]}.{m[2]}.downsample.1.{m[3]}"),
    (re.compile(r"^proposal_generator\.rpn_head\.(conv|objectness_logits|anchor_deltas)\.(weight|bias)$"),
     lambda m: f"rpn_head.{m[1]}.{m[2]}"),
    (re.compile(r"^roi_heads\.box_predictor\.(cls_score|bbox_pred|fc_attr|attr_score)\.(weight|bias)$"),
     lambda m: f"box_predictor.{m[1]}.{m[2]}"),
    (re.compile(r"^roi_heads\.box_predictor\.cls_embedding\.weight$"),
     lambda m: "box_predictor.cls_embedding.weight"),
]
_IGNORED = re.compile(r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\..*)$")

_OURS_TO_D2 = [
    (re.compile(r"^stem\.0\.weight$"), lambda m: "backbone.stem.conv1.weight"),
    (re.compile(rf"^stem\.1\.{_BN}$"), lambda m: f"backbone.stem.conv1.norm.{m[1]}"),
    (re.compile(r"^(res[2-5])\.(\d+)\.conv([123])\.weight$"),
     lambda m: f"{_prefix(m[1])}.{m[1]}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(rf"^(res[2-5])\.(\d+)\.bn([123])\.{_BN}$"),
     lambda m: f"{_prefix(m[1])}.{m[1]}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (re.compile(r"^(res[2-5])\.(\d+)\.downsample\.0\.weight$"),
     lambda m: f"{_prefix(m[1])}.{m[1]}.{m[2]}.shortcut.weight"),
    (re.compile(rf"^(res[2-5])\.(\d+)\.downsample\.1\.{_BN}$"),
     lambda m: f"{_prefix(m[1])}.{m[1]}.{m[2]}.shortcut.norm.{m[3]}"),
    (re.compile(r"^rpn_head\.(.*)$"), lambda m: f"proposal_generator.rpn_head.{m[1]}"),
    (re.compile(r"^box_predictor\.(.*)$"), lambda m: f"roi_heads.box_predictor.{m[1]}"),
]


def _prefix(stage: str) -> str:
    # res5 lives in the RoI head of the C4 model, the other stages in the backbone.
    return "roi_heads" if stage == "res5" else "backbone"


def _apply(rules, name: str) -> str | None:
    for pat, fn in rules:
        m = pat.match(name)
        if m:
            return fn(m)
    return None


def d2_to_ours(name: str) -> str | None:
    """detectron2 parameter name -> `VGDetector` state_dict name (None: not a model parameter)."""
    return _apply(_D2_TO_OURS, name)


def ours_to_d2(name: str) -> str:
    out = _apply(_OURS_TO_D2, name)
    if out is None:
        raise KeyError(f"no detectron2 name for VGDetector parameter {name!r}")
    return out


def read_d2_checkpoint(path: str, *, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """The {detectron2 name: array} dict of a `.pkl` (detectron2-port pickle) or `.pth` file.

    Both are read without running code from the file (restricted unpickler / weights_only); a file
    needing more raises `UnsafePickleError` naming it, unless `trust_pickle`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VG detector checkpoint not found: {path}")
    if path.endswith((".pth", ".pt")):
        obj = torch_load(path, map_location="cpu", trust=trust_pickle)
    else:
        obj = load_pickle(path, trust=trust_pickle, encoding="latin1")
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a dict with 'model' -> {{name: array}}")
    out = {}
    for k, v in obj.items():
        out[str(k)] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return out


def write_d2_pickle(path: str, d2_arrays: dict[str, np.ndarray]) -> None:
    """Write `{"model": arrays, "__author__": ...}` exactly as the published .pkl files are laid out."""
    with open(path, "wb") as f:
        pickle.dump({"model": d2_arrays, "__author__": "stagecache", "matching_heuristics": False}, f)


def convert_d2_state(d2_arrays: dict[str, np.ndarray], expected: dict[str, torch.Tensor], *,
                     source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """detectron2 arrays -> our state_dict, checked against `expected` (our model's state_dict).

    FrozenBN layers saved without running statistics (old Detectron conversions) get mean 0, var 1.
    Raises ValueError naming the source on unknown names, missing parameters or shape mismatches.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, arr in d2_arrays.items():
        ours = d2_to_ours(name)
        if ours is None:
            if not _IGNORED.match(name):
                unknown.append(name)
            continue
        if ours not in expected:
            unknown.append(name)
            continue
        t = torch.as_tensor(np.ascontiguousarray(arr)).float()
        if tuple(t.shape) != tuple(expected[ours].shape):
            raise ValueError(f"{source}: {name} has shape {tuple(t.shape)}, the model expects "
                             f"{tuple(expected[ours].shape)} (is it the VG R-101-C4 detector?)")
        out[ours] = t
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} parameter(s) the VG detector does not have, e.g. "
                         f"{unknown[:5]}")
    for name, ref in expected.items():
        if name in out:
            continue
        if name.endswith("running_mean"):
            out[name] = torch.zeros_like(ref)
        elif name.endswith("running_var"):
            out[name] = torch.ones_like(ref)
    missing = [ours_to_d2(n) for n in expected if n not in out]
    if missing:
        raise ValueError(f"{source}: missing {len(missing)} parameter(s), e.g. {missing[:5]}")
    return out


def to_d2_arrays(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Inverse conversion: our state_dict -> {detectron2 name: float32 array}."""
    return {ours_to_d2(k): v.detach().cpu().float().numpy() for k, v in state_dict.items()}
