"""`ViTBackbone`: a transformers `VideoMAEModel` / `VJEPA2Model` behind the one backbone contract
(extract/backbone_base.py), giving token maps the way VideoMAE's AVA detection code makes them
(MCG-NJU/VideoMAE-Action-Detection `modeling_finetune.py`, `VisionTransformer.forward_features`):

  patch embedding (Conv3d, tubelet x patch x patch)          -> tokens (B, T'H'W', C)
  + VideoMAE: the sine-cosine position embedding of the pretraining grid (T' x g x g), each time
    slice interpolated to the clip's H' x W' (bicubic, align_corners=False, as
    `interpolate_pos_embed_online`) when the clip is not the pretraining size;
    V-JEPA 2: nothing (RoPE inside attention)
  the encoder blocks, then the final LayerNorm                -> reshaped to (B, C, T', H', W')

The per-box pooling after it is extract/roi.py's: time mean, RoIAlign 7 x 7 at 1/patch, spatial max,
with that code's pooler settings (`ROIPoolingCfg`: POOLER_SCALE 1/16, POOLER_SAMPLING_RATIO 0; its
ROIAlign3d calls torchvision's `roi_align` without `aligned`, so False) and its test-time box
enlargement (`BoxList.extend((0.1, 0.05))`): declared here as `roi_aligned` / `box_extend`.

Block n's map (`forward_layers`, `extract features --layers`) is the output of encoder block n
(1-based), before the final LayerNorm, reshaped the same way. The blocks, attention and MLPs are
transformers' own modules (SDPA attention); only the embedding step above is done here, because
transformers' `VideoMAEPatchEmbeddings` refuses any size but the configured one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from stagecache.extract.backbone_base import Sampling, VideoBackbone, sampling_with_overrides
from stagecache.extract.vit.specs import VIT_SPECS, ViTSpec


def interpolate_pos_embed(pos: torch.Tensor, frames: int, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(1, T'*g_h*g_w, C) position embedding -> (1, T'*h*w, C): every time slice resized bicubically."""
    c = pos.shape[-1]
    x = pos.reshape(frames, grid[0], grid[1], c).permute(0, 3, 1, 2)  # (T', C, g_h, g_w)
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, -1, c)


class ViTBackbone(VideoBackbone):
    """A video transformer from transformers; `.net` is the whole transformers model (strict keys)."""

    roi_aligned = False  # VideoMAE AVA: torchvision roi_align's default
    box_extend = (0.1, 0.05)  # VideoMAE AVA: test-time `box.extend(self.test_ext)`

    def __init__(self, *, family: str, patch: int, tubelet: int, pretrain_grid: tuple[int, int, int], **kw):
        super().__init__(**kw)
        self.family = family
        self.patch, self.tubelet = patch, tubelet
        self.pretrain_grid = pretrain_grid  # (T', g, g) the position embedding was made for
        self.channels = [int(self.net.config.hidden_size)]
        self.num_layers = int(self.net.config.num_hidden_layers)
        self.final_norm = "checkpoint"
        self._pos: dict[tuple, torch.Tensor] = {}
        self._grids: set[tuple[int, int, int]] = set()

    @property
    def map_frames(self) -> int:
        return self.sampling.frames // self.tubelet

    @property
    def _blocks(self):
        return self.net.encoder.layer

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """(B, 3, T, H, W) -> tokens (B, T'H'W', C) with positions, and the grid (T', H', W')."""
        b, _, t, h, w = x.shape
        grid = (t // self.tubelet, h // self.patch, w // self.patch)
        if self.family == "vjepa2":
            side = self.net.config.crop_size
            if h != side or w != side:
                raise ValueError(f"{self.name} takes {side} x {side} clips (transformers' RoPE assumes a square "
                                 f"grid of config.crop_size), got {h} x {w}")
            tokens = self.net.encoder.embeddings.patch_embeddings(x)
            return tokens, grid
        if grid[0] != self.pretrain_grid[0]:
            raise ValueError(f"{self.name}: {t} frames give {grid[0]} token frames; its position embedding "
                             f"has {self.pretrain_grid[0]} ({self.sampling.frames} frames)")
        tokens = self.net.embeddings.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
        key = (grid, tokens.device, tokens.dtype)
        if key not in self._pos:
            pos = self.net.embeddings.position_embeddings.to(tokens.device, torch.float32)
            if grid[1:] != self.pretrain_grid[1:]:
                pos = interpolate_pos_embed(pos, grid[0], self.pretrain_grid[1:], grid[1:])
            self._pos[key] = pos.to(tokens.dtype)
        return tokens + self._pos[key], grid

    def _to_map(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b, _, c = tokens.shape
        return tokens.reshape(b, *grid, c).permute(0, 4, 1, 2, 3)  # (B, C, T', H', W')

    def _final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        norm = self.net.layernorm if self.family == "videomae" else self.net.encoder.layernorm
        return tokens if norm is None else norm(tokens)

    def forward_layers(self, inputs, layers):
        if len(inputs) != 1:
            raise ValueError(f"{self.name} takes 1 pathway, got {len(inputs)}")
        bad = [n for n in layers if not 1 <= n <= self.num_layers]
        if bad:
            raise ValueError(f"{self.name} has blocks 1..{self.num_layers}; no block {bad[0]} (--layers)")
        tokens, grid = self._embed(inputs[0])
        self._grids.add(grid)
        out: dict[int, list[torch.Tensor]] = {}
        for n, block in enumerate(self._blocks, 1):
            y = block(tokens) if self.family == "videomae" else block(tokens, None)
            tokens = y[0] if isinstance(y, tuple) else y
            if n in layers:
                out[n] = [self._to_map(tokens, grid)]
        return [self._to_map(self._final_norm(tokens), grid)], out

    def _trunk(self, inputs):
        return self.forward_layers(inputs, ())[0]

    def load_weights(self, path, *, allow_partial: bool = False, trust_pickle: bool = False):
        from stagecache.extract.vit.weights import load_vit_checkpoint
        report, info = load_vit_checkpoint(self.net, path, family=self.family, name=self.name,
                                           allow_partial=allow_partial, trust_pickle=trust_pickle)
        self.final_norm = info["final_norm"]
        self._pos.clear()
        return report

    def run_info(self) -> dict[str, Any]:
        grids = sorted(self._grids)
        return {"token_grids": [list(g) for g in grids],
                "pos_embed_interpolated": self.family == "videomae" and any(g[1:] != self.pretrain_grid[1:]
                                                                            for g in grids)}

    def metadata(self) -> dict[str, Any]:
        s = self.sampling
        h, w = s.short_side, (s.short_side if s.square else int(s.short_side * 16 / 9))
        return {**super().metadata(), "family": self.family, "patch": self.patch, "tubelet": self.tubelet,
                "num_layers": self.num_layers, "final_norm": self.final_norm,
                "pretrain_grid": list(self.pretrain_grid),
                "token_grid_16x9": [self.map_frames, h // self.patch, w // self.patch],
                "position": ("sin-cos, each time slice bicubic-interpolated to the clip's grid (VideoMAE AVA)"
                             if self.family == "videomae" else "RoPE (no position embedding)"),
                "roi_pooler": {"aligned": self.roi_aligned, "sampling_ratio": 0, "box_extend": list(self.box_extend),
                               "time": "mean before RoIAlign", "space": "max"}}


def _config(spec: ViTSpec, s: Sampling, overrides: dict):
    """The transformers config of `spec` at sampling `s` (the import of transformers happens here)."""
    if spec.family == "videomae":
        from transformers import VideoMAEConfig
        cfg = dict(image_size=spec.image_size, patch_size=spec.patch, num_frames=s.frames, tubelet_size=spec.tubelet,
                   hidden_size=spec.width, num_hidden_layers=spec.depth, num_attention_heads=spec.heads,
                   intermediate_size=spec.mlp, qv_bias=True, use_mean_pooling=False, layer_norm_eps=1e-6)
        return VideoMAEConfig(**_checked(cfg, overrides, VideoMAEConfig)), cfg
    from transformers import VJEPA2Config
    # the predictor is built by VJEPA2Model but never run here: kept tiny
    cfg = dict(crop_size=s.short_side, frames_per_clip=s.frames, patch_size=spec.patch, tubelet_size=spec.tubelet,
               hidden_size=spec.width, num_hidden_layers=spec.depth, num_attention_heads=spec.heads,
               mlp_ratio=spec.mlp / spec.width, qkv_bias=True, layer_norm_eps=1e-6,
               pred_hidden_size=64, pred_num_hidden_layers=1, pred_num_attention_heads=2)
    return VJEPA2Config(**_checked(cfg, overrides, VJEPA2Config)), cfg


def _checked(cfg: dict, overrides: dict, config_class) -> dict:
    """`cfg` updated with `overrides` (--backbone-args), whose keys must be fields of `config_class`
    (transformers configs take any keyword silently: a misspelt size would be ignored)."""
    valid = set(config_class().to_dict())
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ValueError(f"--backbone-args: {config_class.__name__} has no {', '.join(bad)}; valid: "
                         f"{', '.join(sorted(valid))}")
    cfg.update(overrides)
    return cfg


def build_vit(name: str, *, res5_dilation: bool = False, sampling_overrides: dict | None = None,
              attn_implementation: str = "sdpa", **overrides) -> ViTBackbone:
    """The backbone `name` of VIT_SPECS; `overrides` go to the transformers config (tests: tiny sizes)."""
    if res5_dilation:
        raise ValueError(f"backbone {name!r} has no res5 dilation option")
    spec = VIT_SPECS[name]
    s = sampling_with_overrides(spec.sampling, sampling_overrides)
    config, cfg = _config(spec, s, overrides)
    config._attn_implementation = attn_implementation
    if spec.family == "videomae":
        from transformers import VideoMAEModel
        net = VideoMAEModel(config)
        g = config.image_size // config.patch_size
        grid = (config.num_frames // config.tubelet_size, g, g)
    else:
        from transformers import VJEPA2Model
        net = VJEPA2Model(config)
        g = config.crop_size // config.patch_size
        grid = (config.frames_per_clip // config.tubelet_size, g, g)
    return ViTBackbone(name=name, net=net, sampling=s, stride=int(config.patch_size), config=cfg,
                       family=spec.family, patch=int(config.patch_size), tubelet=int(config.tubelet_size),
                       pretrain_grid=grid)


def _factory(name: str):
    def factory(**kwargs) -> ViTBackbone:
        return build_vit(name, **kwargs)
    factory.__name__ = f"build_{name}"
    return factory


# name -> factory, merged into extract.backbones.BACKBONES
VIT_BACKBONES = {name: _factory(name) for name in VIT_SPECS}
