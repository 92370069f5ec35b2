"""Checkpoint loading for `extract.backbones`: pytorchvideo hub files, PySlowFast `.pyth`, Caffe2 `.pkl`.

Name conversion goes Caffe2 -> PySlowFast -> pytorchvideo:

  Caffe2 blob                         PySlowFast key                       pytorchvideo key (SlowFast)
  conv1_w / t_conv1_w                 s1.pathway{0,1}_stem.conv.weight     blocks.0.multipathway_blocks.{0,1}.conv.weight
  res_conv1_bn_s / t_res_conv1_bn_b   s1.pathway{p}_stem.bn.{weight,bias}  blocks.0.multipathway_blocks.{p}.norm.*
  res3_1_branch2b_w                   s3.pathway0_res1.branch2.b.weight    blocks.2.multipathway_blocks.0.res_blocks.1.branch2.conv_b.weight
  res3_1_branch2b_bn_rm               s3.pathway0_res1.branch2.b_bn.running_mean   ...branch2.norm_b.running_mean
  res2_0_branch1_w / _bn_s            s2.pathway0_res0.branch1{,_bn}.*     ...res_blocks.0.branch1_conv / branch1_norm
  t_pool1_subsample_w / _bn_s         s1_fuse.conv_f2s.weight / bn.weight  blocks.0.multipathway_fusion.conv_fast_to_slow / norm
  t_res3_3_branch2c_bn_subsample_w    s3_fuse.conv_f2s.weight              blocks.2.multipathway_fusion.conv_fast_to_slow.weight
  pred_w / pred_b                     head.projection.{weight,bias}        the model's head `proj`

BN suffixes: _s weight, _b bias, _rm running_mean, _riv running_var. Single-pathway models
(Slow, I3D) drop the `multipathway_blocks.{p}` level; stage s{k} maps to the k-th stem/stage
block of the pytorchvideo Net (I3D has a pooling block between res2 and res3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pytorchvideo.models.net import DetectionBBoxNetwork, MultiPathWayWithFuse
from pytorchvideo.models.resnet import ResStage
from pytorchvideo.models.stem import ResNetBasicStem

from stagecache.core.errors import UserError
from stagecache.core.safe_pickle import UnsafePickleError, load_pickle, torch_load


class CheckpointError(UserError, RuntimeError):
    pass


@dataclass
class LoadReport:
    path: str
    format: str  # "pytorchvideo" | "pyslowfast" | "caffe2"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: ckpt shape vs model shape"

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        parts = []
        for what, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("shape-mismatched", self.mismatched)):
            if keys:
                more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
                parts.append(f"{len(keys)} {what} keys: {', '.join(keys[:limit])}{more}")
        return f"{self.path} ({self.format}): " + ("; ".join(parts) if parts else "all keys match")


# ---------------------------------------------------------------------------- Caffe2 -> PySlowFast
_BN_SUFFIX = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_PARAM_SUFFIX = {"w": "weight", "b": "bias"}
_C2_SKIP = re.compile(r"(_momentum|_lr|^lr$|^model_iter$|^iter$)")


def _c2_tail(tail: str) -> str | None:
    """'bn_s' -> 'bn.weight'-style suffix; 'w' -> 'weight'."""
    m = re.fullmatch(r"bn_(s|b|rm|riv)", tail)
    if m:
        return "bn." + _BN_SUFFIX[m.group(1)]
    return _PARAM_SUFFIX.get(tail)


def caffe2_name_to_pyslowfast(name: str) -> str | None:
    """Convert one Caffe2 blob name; None for names that are not weights (momentum, iter)."""
    if _C2_SKIP.search(name):
        return None
    # fast-to-slow fusion: after the stem, and after the last block of each stage
    m = re.fullmatch(r"t_pool1_subsample_(bn_(?:s|b|rm|riv)|w|b)", name)
    if m:
        tail = _c2_tail(m.group(1))
        return "s1_fuse." + (tail if tail.startswith("bn.") else "conv_f2s." + tail)
    m = re.fullmatch(r"t_res(\d+)_\d+_branch2c_bn_subsample_(bn_(?:s|b|rm|riv)|w|b)", name)
    if m:
        tail = _c2_tail(m.group(2))
        return f"s{m.group(1)}_fuse." + (tail if tail.startswith("bn.") else "conv_f2s." + tail)
    pathway = 0
    if name.startswith("t_"):
        pathway, name = 1, name[2:]
    m = re.fullmatch(r"conv1_(w|b)", name)
    if m:
        return f"s1.pathway{pathway}_stem.conv.{_PARAM_SUFFIX[m.group(1)]}"
    m = re.fullmatch(r"res_conv1_bn_(s|b|rm|riv)", name)
    if m:
        return f"s1.pathway{pathway}_stem.bn.{_BN_SUFFIX[m.group(1)]}"
    m = re.fullmatch(r"res(\d+)_(\d+)_branch1_(bn_(?:s|b|rm|riv)|w|b)", name)
    if m:
        tail = _c2_tail(m.group(3))
        tail = "branch1_" + tail if tail.startswith("bn.") else "branch1." + tail
        return f"s{m.group(1)}.pathway{pathway}_res{m.group(2)}.{tail}"
    m = re.fullmatch(r"res(\d+)_(\d+)_branch2([abc])_(bn_(?:s|b|rm|riv)|w|b)", name)
    if m:
        tail = _c2_tail(m.group(4))
        tail = f"{m.group(3)}_{tail}" if tail.startswith("bn.") else f"{m.group(3)}.{tail}"
        return f"s{m.group(1)}.pathway{pathway}_res{m.group(2)}.branch2.{tail}"
    if pathway == 0:
        m = re.fullmatch(r"pred_(w|b)", name)
        if m:
            return f"head.projection.{_PARAM_SUFFIX[m.group(1)]}"
    return ("t_" if pathway else "") + name  # unknown: kept, reported as unexpected


def caffe2_to_pyslowfast(blobs: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in blobs.items():
        new = caffe2_name_to_pyslowfast(name)
        if new is not None:
            out[new] = torch.as_tensor(np.asarray(value))
    return out


# ---------------------------------------------------------------------------- PySlowFast -> pytorchvideo
_PSF_RE = [
    (re.compile(r"s(\d+)\.pathway(\d+)_stem\.conv\.(\w+)"), "stem", "conv"),
    (re.compile(r"s(\d+)\.pathway(\d+)_stem\.bn\.(\w+)"), "stem", "norm"),
    (re.compile(r"s(\d+)\.pathway(\d+)_res(\d+)\.branch1\.(\w+)"), "res", "branch1_conv"),
    (re.compile(r"s(\d+)\.pathway(\d+)_res(\d+)\.branch1_bn\.(\w+)"), "res", "branch1_norm"),
    (re.compile(r"s(\d+)\.pathway(\d+)_res(\d+)\.branch2\.([abc])\.(\w+)"), "res2", "conv_"),
    (re.compile(r"s(\d+)\.pathway(\d+)_res(\d+)\.branch2\.([abc])_bn\.(\w+)"), "res2", "norm_"),
    (re.compile(r"s(\d+)_fuse\.conv_f2s\.(\w+)"), "fuse", "conv_fast_to_slow"),
    (re.compile(r"s(\d+)_fuse\.bn\.(\w+)"), "fuse", "norm"),
]
_PSF_MARK = re.compile(r"^(s\d+(_fuse)?\.|head\.projection\.)")


def looks_like_pyslowfast(state: dict) -> bool:
    return any(_PSF_MARK.match(k) for k in state)


def _trunk_layout(net: nn.Module) -> tuple[str, list[int], bool]:
    """(key prefix, block index of s1..s5, multi-pathway?) of a pytorchvideo ResNet/SlowFast."""
    prefix, owner = "", net
    if isinstance(net, DetectionBBoxNetwork):  # the trunk under .model, the RoI head beside it
        prefix, owner = "model.", net.model
    stages = [i for i, b in enumerate(owner.blocks)
              if isinstance(b, (ResNetBasicStem, MultiPathWayWithFuse, ResStage))]
    multi = isinstance(owner.blocks[0], MultiPathWayWithFuse)
    return prefix, stages, multi


def pyslowfast_to_pytorchvideo(state: dict, net: nn.Module) -> dict[str, torch.Tensor]:
    """Rename PySlowFast keys to the module names of the pytorchvideo model `net`."""
    prefix, stages, multi = _trunk_layout(net)
    proj = [k for k in net.state_dict() if k.endswith("proj.weight")]
    out = {}
    for key, value in state.items():
        new = None
        if key.startswith("head.projection.") and len(proj) == 1:
            new = proj[0][: -len("weight")] + key.rsplit(".", 1)[1]
        for rx, kind, mod in _PSF_RE:
            m = rx.fullmatch(key)
            if not m:
                continue
            k = int(m.group(1))
            if k < 1 or k > len(stages):
                break
            blk = f"{prefix}blocks.{stages[k - 1]}."
            if kind == "fuse":
                new = f"{blk}multipathway_fusion.{mod}.{m.group(2)}"
                break
            path = f"multipathway_blocks.{m.group(2)}." if multi else ""
            if kind == "stem":
                new = f"{blk}{path}{mod}.{m.group(3)}"
            elif kind == "res":
                new = f"{blk}{path}res_blocks.{m.group(3)}.{mod}.{m.group(4)}"
            else:
                new = f"{blk}{path}res_blocks.{m.group(3)}.branch2.{mod}{m.group(4)}.{m.group(5)}"
            break
        out[new if new is not None else key] = value
    return out


# ---------------------------------------------------------------------------- reading and loading
def read_checkpoint(path: str | Path, net: nn.Module, *,
                    trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint file into a state dict named after `net`'s modules, and its format.

    Files come from other people, so nothing in them may run: a Caffe2 `.pkl` (Python 2 pickle of
    numpy blobs) goes through the restricted unpickler, a torch file through `weights_only=True`
    with numpy arrays/scalars admitted (PySlowFast's save_checkpoint writes the epoch, the model and
    optimizer state dicts, the GradScaler state and `cfg.dump()`, a YAML string: nothing more is
    needed). Anything else raises `UnsafePickleError` naming the file and type, unless
    `trust_pickle` (the user's --trust-pickle) allows plain unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".pkl":
            obj = load_pickle(path, trust=trust_pickle, encoding="latin1")
            if not isinstance(obj, dict) or not isinstance(obj.get("blobs"), dict):
                raise CheckpointError(f"{path}: a Caffe2 .pkl must hold a dict with a 'blobs' dict")
            state = caffe2_to_pyslowfast(obj["blobs"])
            return pyslowfast_to_pytorchvideo(state, net), "caffe2"
        obj = torch_load(path, map_location="cpu", trust=trust_pickle)
    except (CheckpointError, UnsafePickleError):
        raise
    except Exception as e:  # corrupt file, wrong pickle protocol, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict or a dict with 'model_state'")
    for k in ("model_state", "state_dict", "model"):
        if k in obj and isinstance(obj[k], dict):
            obj = obj[k]
            break
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()
             if isinstance(v, torch.Tensor)}
    if looks_like_pyslowfast(state):
        return pyslowfast_to_pytorchvideo(state, net), "pyslowfast"
    return state, "pytorchvideo"


def match_state(state: dict, own: dict, report: LoadReport, optional=lambda k: False) -> tuple[dict, LoadReport]:
    """The tensors of `state` that fit the module's `own` state (cast to its dtypes), and `report`
    filled with the keys missing (but those `optional`), unexpected and of another shape."""
    report.missing = sorted(k for k in own if k not in state and not optional(k))
    report.unexpected = sorted(k for k in state if k not in own)
    good = {}
    for k, v in state.items():
        if k in own:
            if tuple(v.shape) != tuple(own[k].shape):
                report.mismatched.append(f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}")
            else:
                good[k] = v.to(own[k].dtype)
    return good, report


def load_checkpoint(net: nn.Module, path: str | Path, *, allow_partial: bool = False,
                    trust_pickle: bool = False) -> LoadReport:
    """Load `path` into `net`. Missing/unexpected/mismatched keys raise CheckpointError unless
    `allow_partial` (then the matching keys are loaded and the report lists the rest).
    `trust_pickle`: see `read_checkpoint`."""
    state, fmt = read_checkpoint(path, net, trust_pickle=trust_pickle)
    # BN step counters do not affect inference and Caffe2 files never have them
    good, report = match_state(state, net.state_dict(), LoadReport(path=str(path), format=fmt),
                               optional=lambda k: k.endswith("num_batches_tracked"))
    if not report.complete and not allow_partial:
        raise CheckpointError("checkpoint does not match the backbone (use --allow-partial-checkpoint "
                              "to load the matching keys anyway): " + report.describe())
    net.load_state_dict(good, strict=False)
    return report
