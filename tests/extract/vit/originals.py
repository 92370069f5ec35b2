"""Test-side pieces for the ViT backbone tests, written independently of extract/vit/:

- tiny configurations of every name (2-3 blocks, width 32);
- the original checkpoint layouts (VideoMAE pretraining / fine-tuning `.pth`, VideoMAE V2 the same,
  V-JEPA 2 `.pt`), made from a transformers model's weights by the inverse of the published layout;
- a reference of VideoMAE's AVA detection computation (MCG-NJU/VideoMAE-Action-Detection
  `modeling_finetune.py` forward_features: patch embed, sine-cosine table reshaped per time slice and
  bicubic-interpolated to the clip's grid, the blocks, norm, reshape (B, C, T', H', W'), time mean,
  `roi_align(x, rois, 7x7, 1/16, 0)` (torchvision's default aligned=False), MaxPool2d(7)); boxes
  enlarged as AlphAction's `BoxList.extend((0.1, 0.05))` + `clip_to_image`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from stagecache.extract.vit import VIT_SPECS

WIDTH, HEADS = 32, 2


def tiny(name: str, blocks: int = 3) -> tuple[dict, dict]:
    """(backbone kwargs, sampling overrides) of a tiny `name`: pretraining grid 2 x 2 x 2 tokens."""
    spec = VIT_SPECS[name]
    kw = dict(hidden_size=WIDTH, num_hidden_layers=blocks, num_attention_heads=HEADS)
    if spec.family == "videomae":
        kw.update(intermediate_size=2 * WIDTH, image_size=2 * spec.patch)
        return kw, dict(frames=4, short_side=3 * spec.patch)
    kw.update(mlp_ratio=2.0)
    return kw, dict(frames=4, short_side=2 * spec.patch)


def randomize(net: nn.Module, seed: int) -> None:
    """Every parameter drawn at random (norms near 1), so a wrong key or split shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))


def videomae_original(hf: dict[str, torch.Tensor], depth: int, *, prefix: str = "", norm: bool = True
                      ) -> dict[str, torch.Tensor]:
    """VideoMAE's own names (`modeling_finetune.VisionTransformer` / the pretraining encoder) from a
    VideoMAEModel state dict."""
    out = {f"{prefix}patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
           f"{prefix}patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"]}
    for i in range(depth):
        h, o = f"encoder.layer.{i}.", f"{prefix}blocks.{i}."
        a = h + "attention.attention."
        out[o + "attn.qkv.weight"] = torch.cat([hf[a + "query.weight"], hf[a + "key.weight"], hf[a + "value.weight"]])
        out[o + "attn.q_bias"] = hf[a + "query.bias"]
        out[o + "attn.v_bias"] = hf[a + "value.bias"]
        for mine, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                             ("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                             ("mlp.fc2", "output.dense")):
            for t in ("weight", "bias"):
                out[f"{o}{mine}.{t}"] = hf[f"{h}{theirs}.{t}"]
    if norm:
        out[f"{prefix}norm.weight"], out[f"{prefix}norm.bias"] = hf["layernorm.weight"], hf["layernorm.bias"]
    return out


def vjepa2_original(hf: dict[str, torch.Tensor], depth: int, prefix: str = "module.backbone.") -> dict:
    """vjepa2's `VisionTransformer` names (as its train loop saves them, DDP + wrapper prefixes)."""
    out = {f"{prefix}patch_embed.proj.weight": hf["encoder.embeddings.patch_embeddings.proj.weight"],
           f"{prefix}patch_embed.proj.bias": hf["encoder.embeddings.patch_embeddings.proj.bias"],
           f"{prefix}norm.weight": hf["encoder.layernorm.weight"], f"{prefix}norm.bias": hf["encoder.layernorm.bias"]}
    for i in range(depth):
        h, o = f"encoder.layer.{i}.", f"{prefix}blocks.{i}."
        for t in ("weight", "bias"):
            out[f"{o}attn.qkv.{t}"] = torch.cat([hf[f"{h}attention.{q}.{t}"] for q in ("query", "key", "value")])
            for mine, theirs in (("norm1", "norm1"), ("norm2", "norm2"), ("attn.proj", "attention.proj"),
                                 ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                out[f"{o}{mine}.{t}"] = hf[f"{h}{theirs}.{t}"]
    return out


def sincos_table(n: int, d: int) -> torch.Tensor:
    """The sine-cosine table of VideoMAE's `get_sinusoid_encoding_table`: (1, n, d)."""
    pos = np.arange(n)[:, None] / np.power(10000, 2 * (np.arange(d) // 2) / d)[None, :]
    pos[:, 0::2], pos[:, 1::2] = np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])
    return torch.tensor(pos, dtype=torch.float)[None]


def ava_tokens(net, clip: torch.Tensor, grid0: int, patch: int) -> tuple[list[torch.Tensor], torch.Tensor, tuple]:
    """VideoMAE AVA forward_features up to the norm: (hidden state after each block, normed last, grid)."""
    x = net.embeddings.patch_embeddings.projection(clip)  # (B, C, t, h, w)
    b, c, t, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = sincos_table(t * grid0 * grid0, c).reshape(t, -1, c)
    pos = pos.reshape(-1, grid0, grid0, c).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
    pos = pos.permute(0, 2, 3, 1).flatten(1, 2).reshape(1, -1, c)
    x = x + pos
    hidden = []
    for blk in net.encoder.layer:
        y = blk(x)
        x = y[0] if isinstance(y, tuple) else y
        hidden.append(x)
    return hidden, net.layernorm(x), (t, h, w)


def extend_boxes(px: torch.Tensor, width: int, height: int, scale=(0.1, 0.05)) -> torch.Tensor:
    """AlphAction BoxList.extend then clip_to_image (TO_REMOVE = 1), boxes in pixels (N, 4)."""
    x1, y1, x2, y2 = px.unbind(1)
    pw, ph = scale[0] * (x2 - x1 + 1) / 2, scale[1] * (y2 - y1 + 1) / 2
    out = torch.stack([x1 - pw, y1 - ph, x2 + pw, y2 + ph], 1)
    out[:, 0::2] = out[:, 0::2].clamp(0, width - 1)
    out[:, 1::2] = out[:, 1::2].clamp(0, height - 1)
    return out


def ava_pool(tokens: torch.Tensor, grid: tuple, boxes: torch.Tensor, clip_index: torch.Tensor, size: tuple,
             patch: int, extend: bool = True) -> torch.Tensor:
    """tokens (B, t*h*w, C) -> (N, C) as the AVA head: reshape, time mean, RoIAlign 7x7 at 1/patch, max."""
    b, _, c = tokens.shape
    x = tokens.reshape(b, *grid, c).permute(0, 4, 1, 2, 3).mean(dim=2)  # (B, C, h, w)
    h_in, w_in = size
    px = boxes * torch.tensor([w_in, h_in, w_in, h_in], dtype=boxes.dtype)
    if extend:
        px = extend_boxes(px, w_in, h_in)
    rois = torch.cat([clip_index.float()[:, None], px], 1)
    r = roi_align(x.float(), rois, (7, 7), 1.0 / patch, 0)
    return nn.MaxPool2d((7, 7))(r).view(r.size(0), -1)
