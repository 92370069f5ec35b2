"""RoI pooling of backbone feature maps to per-box features (the AVA detection-head pooling).

pooled (PySlowFast / pytorchvideo `ResNetRoIHead`): each pathway's last-stage map is averaged over
time, pathways are concatenated on channels, RoIAlign (7x7, spatial_scale 1/stride) samples each box
and a spatial max pool gives one C-d vector per box (2304 = 2048 slow + 256 fast for SlowFast R50).

Optional levels:
  roi       (N, C, R, R)  the RoIAlign output before the max pool
  temporal  (N, T, C)     RoIAlign + spatial max per time step (pathways resampled to the slow T)
  context   (B, C, g, g)  the temporally averaged map of each clip, adaptive-avg-pooled to g x g
                          (or the full map when context_grid is None)

Boxes are normalised x1, y1, x2, y2; they are scaled to the input frame's pixels and RoIAlign
maps pixels to map cells with 1/stride, as in PySlowFast (boxes scaled to the crop, scale 1/16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from stagecache.extract.store.schema import LEVELS


def boxes_to_rois(boxes: torch.Tensor, batch_index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 4) normalised boxes + (N,) clip index -> (N, 5) [idx, x1, y1, x2, y2] in input pixels."""
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return torch.cat([batch_index.to(boxes.dtype)[:, None], boxes * scale], dim=1)


def extend_rois(rois: torch.Tensor, extend: tuple[float, float], height: int, width: int) -> torch.Tensor:
    """VideoMAE's AVA test-time box enlargement (AlphAction `BoxList.extend` then `clip_to_image`): each
    side moves out by scale x (size + 1) / 2 pixels (its TO_REMOVE = 1 sizes), x by extend[0], y by
    extend[1], then clamped to [0, W - 1] x [0, H - 1]. (That code also drops boxes left empty by the
    clamp; here every box keeps its row.) rois: (N, 5) [idx, x1, y1, x2, y2] in input pixels."""
    x1, y1, x2, y2 = rois[:, 1:].unbind(1)
    pw, ph = extend[0] * (x2 - x1 + 1) / 2, extend[1] * (y2 - y1 + 1) / 2
    out = torch.stack([(x1 - pw).clamp(0, width - 1), (y1 - ph).clamp(0, height - 1),
                       (x2 + pw).clamp(0, width - 1), (y2 + ph).clamp(0, height - 1)], dim=1)
    return torch.cat([rois[:, :1], out], dim=1)


def temporal_mean_concat(maps: list[torch.Tensor]) -> torch.Tensor:
    """[(B, C_p, T_p, h, w)] -> (B, sum C_p, h, w): per-pathway temporal mean, channel concat."""
    return torch.cat([m.mean(dim=2) for m in maps], dim=1)


def _resample_time(m: torch.Tensor, t: int) -> torch.Tensor:
    """(B, C, T_p, h, w) -> (B, C, t, h, w) by averaging groups of T_p / t frames (fast -> slow)."""
    tp = m.shape[2]
    if tp == t:
        return m
    if tp % t == 0:
        b, c, _, h, w = m.shape
        return m.reshape(b, c, t, tp // t, h, w).mean(dim=3)
    return F.adaptive_avg_pool3d(m, (t, m.shape[3], m.shape[4]))


def pool_rois(maps: list[torch.Tensor], boxes: torch.Tensor, batch_index: torch.Tensor, *,
              input_size: tuple[int, int], stride: int, resolution: int = 7, aligned: bool = True,
              sampling_ratio: int = 0, levels: tuple[str, ...] = (),
              context_grid: int | None = None,
              box_extend: tuple[float, float] | None = None) -> dict[str, torch.Tensor]:
    """Per-box features from the pathway maps of a batch of clips.

    maps: [(B, C_p, T_p, h, w)] last-stage maps; boxes: (N, 4) normalised; batch_index: (N,) the
    clip of each box; input_size: (H, W) of the frames fed to the backbone; box_extend: the (x, y)
    enlargement of `extend_rois` (the ViT backbones' AVA code), None for none.
    Returns {"pooled": (N, C)} plus the requested `levels` ("roi", "temporal", "context").
    """
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown feature levels {sorted(unknown)}; valid: {', '.join(LEVELS)}")
    if len({tuple(m.shape[-2:]) for m in maps}) != 1:
        raise ValueError(f"pathway maps differ in spatial size: {[tuple(m.shape) for m in maps]}")
    h_in, w_in = input_size
    feat = temporal_mean_concat(maps).float()  # (B, C, h, w)
    rois = boxes_to_rois(boxes.float(), batch_index, h_in, w_in)
    if box_extend is not None:
        rois = extend_rois(rois, box_extend, h_in, w_in)
    out: dict[str, torch.Tensor] = {}
    roi = roi_align(feat, rois, (resolution, resolution), spatial_scale=1.0 / stride,
                    sampling_ratio=sampling_ratio, aligned=aligned)  # (N, C, R, R)
    out["pooled"] = roi.amax(dim=(2, 3))  # (N, C)
    if "roi" in levels:
        out["roi"] = roi
    if "temporal" in levels:
        t = maps[0].shape[2]
        seq = torch.cat([_resample_time(m.float(), t) for m in maps], dim=1)  # (B, C, t, h, w)
        b, c, _, h, w = seq.shape
        frames = seq.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B*t, C, h, w)
        n = boxes.shape[0]
        idx = (batch_index.long()[:, None] * t + torch.arange(t, device=boxes.device)[None]).reshape(-1)
        rois_t = torch.cat([idx.to(rois.dtype)[:, None], rois[:, 1:].repeat_interleave(t, dim=0)], dim=1)
        r = roi_align(frames, rois_t, (resolution, resolution), spatial_scale=1.0 / stride,
                      sampling_ratio=sampling_ratio, aligned=aligned)  # (N*t, C, R, R)
        out["temporal"] = r.amax(dim=(2, 3)).reshape(n, t, c)
    if "context" in levels:
        out["context"] = feat if context_grid is None else F.adaptive_avg_pool2d(feat, context_grid)
    return out
