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

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from pytorchvideo.models.csn import create_csn
from pytorchvideo.models.net import MultiPathWayWithFuse
from pytorchvideo.models.resnet import create_resnet
from pytorchvideo.models.slowfast import create_slowfast, create_slowfast_with_roi_head
from pytorchvideo.models.vision_transformers import create_multiscale_vision_transformers
from pytorchvideo.models.x3d import create_x3d

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class Sampling:
    """Clip sampling of a backbone, in frames of a `fps` frame grid (AVA: 30 fps).

    The slow (or only) pathway sees `frames` frames `rate` apart (the paper's T x tau); the fast
    pathway of SlowFast sees `frames * alpha` frames `rate // alpha` apart. Frames are resized so
    the short side is `short_side` (PySlowFast AVA test: full frame, short side 256, no crop), or
    to `short_side` x `short_side` when `square` (models with fixed positional embeddings).
    """

    frames: int
    rate: int
    alpha: int = 1
    fps: float = 30.0
    short_side: int = 256
    square: bool = False
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD

    def __post_init__(self):
        if self.frames < 1 or self.rate < 1 or self.alpha < 1:
            raise ValueError(f"sampling frames/rate/alpha must be >= 1, got {self}")
        if self.alpha > 1 and self.rate % self.alpha:
            raise ValueError(f"sampling rate {self.rate} must be a multiple of alpha {self.alpha}")

    @property
    def read_frames(self) -> int:
        """Frames decoded per clip (those of the fastest pathway)."""
        return self.frames * self.alpha

    @property
    def read_rate(self) -> int:
        return self.rate // self.alpha

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


class VideoBackbone(nn.Module):
    """The one wrapper contract. Subclasses implement `_trunk(inputs) -> list of maps`."""

    def __init__(self, *, name: str, net: nn.Module, sampling: Sampling, stride: int,
                 config: dict[str, Any]):
        super().__init__()
        self.name = name
        self.net = net
        self.sampling = sampling
        self.stride = stride
        self.config = config  # constructor arguments that change the architecture (store attrs)
        self.channels: list[int] = []  # filled by subclasses
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @property
    def num_pathways(self) -> int:
        return 2 if self.sampling.alpha > 1 else 1

    @property
    def out_channels(self) -> int:
        """Width of the pooled feature (pathways concatenated)."""
        return sum(self.channels)

    def pack(self, clips: torch.Tensor) -> list[torch.Tensor]:
        """(B, T_read, H, W, 3) uint8 -> list of normalised (B, 3, T_p, H, W) float pathways.

        The slow pathway picks `frames` of the fast clip with PySlowFast's
        `linspace(0, T_fast - 1, T_fast // alpha)` index, so frames match PySlowFast exactly.
        """
        s = self.sampling
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"clips must be (B, T, H, W, 3), got {tuple(clips.shape)}")
        if clips.shape[1] != s.read_frames:
            raise ValueError(f"{self.name} expects {s.read_frames} frames per clip, got {clips.shape[1]}")
        x = clips.permute(0, 4, 1, 2, 3).float().div_(255.0)  # (B, 3, T, H, W)
        mean = torch.tensor(s.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
        std = torch.tensor(s.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
        x = (x - mean) / std
        if s.alpha == 1:
            return [x]
        idx = torch.linspace(0, x.shape[2] - 1, x.shape[2] // s.alpha, device=x.device).long()
        return [x.index_select(2, idx), x]

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(inputs) != self.num_pathways:
            raise ValueError(f"{self.name} takes {self.num_pathways} pathway(s), got {len(inputs)}")
        return self._trunk(list(inputs))

    def _trunk(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        return {"backbone": self.name, "channels": list(self.channels), "stride": self.stride,
                "sampling": self.sampling.to_dict(), "config": _jsonable(self.config)}


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return getattr(v, "__name__", repr(v))


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

def _sampling(default: Sampling, overrides: dict | None) -> Sampling:
    if not overrides:
        return default
    d = asdict(default)
    unknown = set(overrides) - set(d)
    if unknown:
        raise ValueError(f"unknown sampling fields {sorted(unknown)}; valid: {sorted(d)}")
    d.update(overrides)
    d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
    return Sampling(**d)


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
# Family names as users type them (`extract features --backbone slowfast`): the usual variant.
for _alias, _name in {"slowfast": "slowfast_r50", "slow": "slow_r50", "i3d": "i3d_r50", "x3d": "x3d_m",
                      "csn": "csn_r101", "mvit": "mvit_b"}.items():
    BACKBONES[_alias] = BACKBONES[_name]


def build_backbone(name: str, **kwargs) -> VideoBackbone:
    """Build a backbone by registry name; unknown names raise KeyError listing the valid ones."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)
