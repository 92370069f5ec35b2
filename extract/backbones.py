"""Frozen video backbones behind one wrapper contract.

Every backbone is built from pytorchvideo's own constructors (only `pytorchvideo.models` is
imported: its transforms module breaks on current torchvision) and wrapped in `VideoBackbone`:

    clips (B, T, H, W, 3) uint8  --pack()-->  [pathway tensors (B, 3, T_p, H, W) float]
    forward(list of pathway tensors) -> [feature maps (B, C_p, T_p', h, w)] at the last stage

plus metadata: `channels` (per pathway), `stride` (input pixels per feature-map cell),
`sampling` (the published clip sampling: T, tau, alpha, fps, resize, normalisation).

The whole pytorchvideo model (head included) is kept in `.net` so checkpoints load with strict
key checking against the published layout; only the trunk runs at extraction time.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from pytorchvideo.models.csn import create_csn
from pytorchvideo.models.net import MultiPathWayWithFuse
from pytorchvideo.models.resnet import create_resnet
from pytorchvideo.models.slowfast import create_slowfast, create_slowfast_with_roi_head
from pytorchvideo.models.vision_transformers import create_multiscale_vision_transformers
from pytorchvideo.models.x3d import create_x3d

# the contract lives in backbone_base (extract/vit/ builds on it too); imported from here as before
from stagecache.extract.backbone_base import Sampling, VideoBackbone, sampling_with_overrides as _sampling
from stagecache.extract.vit import VIT_BACKBONES


def _last_norm_width(module: nn.Module) -> int:
    """Output width of a residual stage: its last normalisation layer's width."""
    width = None
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            width = m.num_features
        elif isinstance(m, nn.LayerNorm):
            width = m.normalized_shape[0]
    if width is None:
        raise RuntimeError("could not infer the output width of the backbone's last stage")
    return width


class NetBackbone(VideoBackbone):
    """pytorchvideo `Net` models (ResNet, SlowFast, CSN, X3D): run blocks[:n_trunk]."""

    def __init__(self, *, n_trunk: int, trunk_owner: nn.Module | None = None, **kw):
        super().__init__(**kw)
        owner = trunk_owner if trunk_owner is not None else self.net
        self._blocks = list(owner.blocks[:n_trunk])
        last = self._blocks[-1]
        if isinstance(last, MultiPathWayWithFuse):  # SlowFast: one width per pathway
            self.channels = [_last_norm_width(b) for b in last.multipathway_blocks]
        else:
            self.channels = [_last_norm_width(last)]

    def _trunk(self, inputs):
        x: Any = inputs if self.num_pathways > 1 else inputs[0]
        for b in self._blocks:
            x = b(x)
        return list(x) if isinstance(x, (list, tuple)) else [x]


class MViTBackbone(VideoBackbone):
    """MViT: tokens after the last block (cls token dropped) reshaped to (B, C, T, H, W)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.channels = [self.net.norm_embed.normalized_shape[0]]

    def _trunk(self, inputs):
        net, x = self.net, inputs[0]
        x = net.patch_embed(x)
        x = net.cls_positional_encoding(x)
        if net.pos_drop is not None:
            x = net.pos_drop(x)
        if net.norm_patch_embed is not None:
            x = net.norm_patch_embed(x)
        thw = net.cls_positional_encoding.patch_embed_shape
        for blk in net.blocks:
            x, thw = blk(x, thw)
        x = net.norm_embed(x)
        t, h, w = thw
        x = x[:, -t * h * w:]  # drop the cls token
        return [x.reshape(x.shape[0], t, h, w, x.shape[-1]).permute(0, 4, 1, 2, 3).contiguous()]


# ---------------------------------------------------------------------------- factories
# Each factory: (*, res5_dilation: bool = False, **constructor_overrides) -> VideoBackbone.
# Overrides go straight to the pytorchvideo constructor (tests use tiny widths/depths through
# them); `sampling_overrides` replaces fields of the published sampling (tests: tiny frames).

def _slowfast_factory(name: str, defaults: dict, sampling: Sampling, detection: bool = False):
    def factory(*, res5_dilation: bool | None = None, sampling_overrides: dict | None = None,
                **overrides) -> VideoBackbone:
        cfg = dict(defaults)
        # The detection architecture is published with res5 dilated (stride 16); keep that default.
        dil = detection if res5_dilation is None else res5_dilation
        if dil:
            cfg["stage_conv_b_dilations"] = (((1, 1, 1),) * 3 + ((1, 2, 2),),) * 2
            cfg["stage_spatial_strides"] = ((1, 2, 2, 1), (1, 2, 2, 1))
        elif detection:
            cfg["stage_conv_b_dilations"] = (((1, 1, 1),) * 4,) * 2
            cfg["stage_spatial_strides"] = ((1, 2, 2, 2), (1, 2, 2, 2))
        cfg.update(overrides)
        s = _sampling(sampling, sampling_overrides)
        stride = 16 if dil else 32
        if detection:
            cfg.setdefault("head_spatial_scale", 1.0 / stride)
            cfg.setdefault("head_pool_kernel_sizes", ((s.frames, 1, 1), (s.read_frames, 1, 1)))
            net = create_slowfast_with_roi_head(**cfg)
            # net.model.blocks: stem, res2..res5, PoolConcatPathway(temporal avg); head separate.
            return NetBackbone(name=name, net=net, sampling=s, stride=stride, config=cfg,
                               n_trunk=len(net.model.blocks) - 1, trunk_owner=net.model)
        net = create_slowfast(**cfg)
        # blocks: stem, res2..res5, PoolConcatPathway, head -> trunk is blocks[:-2]
        return NetBackbone(name=name, net=net, sampling=s, stride=stride, config=cfg,
                           n_trunk=len(net.blocks) - 2)
    return factory


def _resnet_factory(name: str, defaults: dict, sampling: Sampling, builder: Callable = create_resnet,
                    dilatable: bool = True):
    def factory(*, res5_dilation: bool = False, sampling_overrides: dict | None = None,
                **overrides) -> VideoBackbone:
        cfg = dict(defaults)
        if res5_dilation:
            if not dilatable:
                raise ValueError(f"backbone {name!r} has no res5 dilation option")
            cfg["stage_conv_b_dilation"] = ((1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 2, 2))
            cfg["stage_spatial_h_stride"] = (1, 2, 2, 1)
            cfg["stage_spatial_w_stride"] = (1, 2, 2, 1)
        cfg.update(overrides)
        net = builder(**cfg)
        return NetBackbone(name=name, net=net, sampling=_sampling(sampling, sampling_overrides),
                           stride=16 if res5_dilation else 32, config=cfg,
                           n_trunk=len(net.blocks) - 1)
    return factory


def _x3d_factory(name: str, defaults: dict, sampling: Sampling):
    def factory(*, res5_dilation: bool = False, sampling_overrides: dict | None = None,
                **overrides) -> VideoBackbone:
        if res5_dilation:
            raise ValueError(f"backbone {name!r} has no res5 dilation option")
        cfg = {**defaults, **overrides}
        net = create_x3d(**cfg)
        # blocks: stem, res2..res5, head(conv5 + pool + proj): the trunk stops at res5.
        return NetBackbone(name=name, net=net, sampling=_sampling(sampling, sampling_overrides),
                           stride=32, config=cfg, n_trunk=len(net.blocks) - 1)
    return factory


def _mvit_factory(name: str, defaults: dict, sampling: Sampling):
    def factory(*, res5_dilation: bool = False, sampling_overrides: dict | None = None,
                **overrides) -> VideoBackbone:
        if res5_dilation:
            raise ValueError(f"backbone {name!r} has no res5 dilation option")
        cfg = {**defaults, **overrides}
        s = _sampling(sampling, sampling_overrides)
        net = create_multiscale_vision_transformers(**cfg)
        # stride = patch-embed stride x every query-pooling stride (32 for MViT-B)
        stride = int(cfg.get("conv_patch_embed_stride", (2, 4, 4))[-1])
        for q in cfg.get("pool_q_stride_size") or []:
            stride *= int(q[-1])
        return MViTBackbone(name=name, net=net, sampling=s, stride=stride, config=cfg)
    return factory


_SF_R101_16x8_CONV_A = (
    ((1, 1, 1), (1, 1, 1), ((3, 1, 1),) * 6 + ((1, 1, 1),) * 17, (3, 1, 1)),
    ((3, 1, 1), (3, 1, 1), ((3, 1, 1),) * 6 + ((1, 1, 1),) * 17, (3, 1, 1)),
)
_SF = Sampling(frames=8, rate=8, alpha=4)            # SlowFast 8x8: slow 8 x 8, fast 32 x 2
_MVIT_CFG = dict(spatial_size=224, temporal_size=16,
                 embed_dim_mul=[[1, 2.0], [3, 2.0], [14, 2.0]],
                 atten_head_mul=[[1, 2.0], [3, 2.0], [14, 2.0]],
                 pool_q_stride_size=[[1, 1, 2, 2], [3, 1, 2, 2], [14, 1, 2, 2]],
                 pool_kv_stride_adaptive=[1, 8, 8], pool_kvq_kernel=[3, 3, 3])

# name -> factory. Defaults are those of pytorchvideo's hub builders (published checkpoints).
BACKBONES: dict[str, Callable[..., VideoBackbone]] = {
    "slowfast_r50": _slowfast_factory(
        "slowfast_r50", dict(model_depth=50, slowfast_fusion_conv_kernel_size=(7, 1, 1)), _SF),
    "slowfast_r101": _slowfast_factory(
        "slowfast_r101", dict(model_depth=101, slowfast_fusion_conv_kernel_size=(5, 1, 1)), _SF),
    "slowfast_r101_16x8": _slowfast_factory(
        "slowfast_r101_16x8",
        dict(model_depth=101, slowfast_fusion_conv_kernel_size=(5, 1, 1),
             stage_conv_a_kernel_sizes=_SF_R101_16x8_CONV_A,
             head_pool_kernel_sizes=((16, 7, 7), (64, 7, 7))),
        Sampling(frames=16, rate=8, alpha=4)),
    "slowfast_r50_detection": _slowfast_factory(
        "slowfast_r50_detection", dict(model_depth=50), _SF, detection=True),
    "slow_r50": _resnet_factory(
        "slow_r50", dict(model_depth=50, stem_conv_kernel_size=(1, 7, 7),
                         head_pool_kernel_size=(8, 7, 7)), Sampling(frames=8, rate=8)),
    "i3d_r50": _resnet_factory(
        "i3d_r50", dict(model_depth=50, stem_conv_kernel_size=(5, 7, 7), stage1_pool=nn.MaxPool3d,
                        stage_conv_a_kernel_size=((3, 1, 1), [(3, 1, 1), (1, 1, 1)],
                                                  [(3, 1, 1), (1, 1, 1)], [(1, 1, 1), (3, 1, 1)])),
        Sampling(frames=8, rate=8)),
    "x3d_xs": _x3d_factory("x3d_xs", dict(input_clip_length=4, input_crop_size=160),
                           Sampling(frames=4, rate=12, short_side=182)),
    "x3d_s": _x3d_factory("x3d_s", dict(input_clip_length=13, input_crop_size=160),
                          Sampling(frames=13, rate=6, short_side=182)),
    "x3d_m": _x3d_factory("x3d_m", dict(input_clip_length=16, input_crop_size=224),
                          Sampling(frames=16, rate=5, short_side=256)),
    "x3d_l": _x3d_factory("x3d_l", dict(input_clip_length=16, input_crop_size=312, depth_factor=5.0),
                          Sampling(frames=16, rate=5, short_side=356)),
    "csn_r101": _resnet_factory(
        "csn_r101", dict(model_depth=101, stem_pool=nn.MaxPool3d, head_pool_kernel_size=(4, 7, 7)),
        Sampling(frames=32, rate=2), builder=create_csn, dilatable=False),
    "mvit_b": _mvit_factory("mvit_b", _MVIT_CFG,
                            Sampling(frames=16, rate=4, short_side=224, square=True)),
}
# The video transformers (extract/vit/: transformers' VideoMAEModel / VJEPA2Model, imported on build).
BACKBONES.update(VIT_BACKBONES)
# Family names as users type them (`extract features --backbone slowfast`): the usual variant.
for _alias, _name in {"slowfast": "slowfast_r50", "slow": "slow_r50", "i3d": "i3d_r50", "x3d": "x3d_m",
                      "csn": "csn_r101", "mvit": "mvit_b"}.items():
    BACKBONES[_alias] = BACKBONES[_name]


def backbone_keywords(name: str) -> frozenset[str] | None:
    """The keywords `--backbone-args` may give backbone `name`: its factory's own and those of the
    pytorchvideo builder it passes the others to; None where they cannot be read (the build then says)."""
    import inspect

    factory = BACKBONES[name]
    params = inspect.signature(factory).parameters.values()
    out = {p.name for p in params if p.kind is p.KEYWORD_ONLY} - {"sampling_overrides"}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        return frozenset(out)
    try:
        refs = inspect.getclosurevars(factory)
    except TypeError:
        return None
    builders = [f for f in (*refs.nonlocals.values(), *refs.globals.values())
                if callable(f) and str(getattr(f, "__module__", "")).startswith("pytorchvideo.")]
    if not builders:
        return None
    for b in builders:
        out |= {p.name for p in inspect.signature(b).parameters.values()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return frozenset(out)


def build_backbone(name: str, **kwargs) -> VideoBackbone:
    """Build a backbone by registry name; unknown names raise KeyError listing the valid ones."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)
