"""Spatial and temporal feature levels of the feature-level synthetic store.

`extract/synthetic/store.py` writes one pooled vector per actor that carries only the actor
itself (pose, identity). Heads such as ACRN / ACAR (context map), S-only and IGMN's DAM (RoI maps)
and T-only (temporal sequences) read other levels of a backbone; this module draws them from the
same simulated scene, the way a frozen backbone would see it, so that those heads can be compared
with the others on one store:

- scene map (per keyframe, `grid` x `grid` cells, C = actor_dim channels): every GT actor adds its
  own feature vector (the pooled feature of its row) to the cells its box covers, every object adds
  the code of its class (`context_codes`, fixed across seeds, in actor space) to the cells its box
  covers, and each cell gets noise N(0, map_noise^2 / C). "Covers" is the fraction of the cell
  inside the box, with boxes smaller than a cell grown to one cell around their centre so that a
  cup never falls between cells (a backbone's receptive field is never smaller than a cell either),
  scaled so that each box's best-covered cell has weight 1: a cup lights up its cell as fully as a
  person does, as the channels of a detection-trained backbone respond to an object, not to its area.
- `kf_context` (K, C, H, W): the scene map average-pooled to `context_size` x `context_size`
  (default 16: the scene grid itself, like a SlowFast res5 map of a 256-px frame; at 8 x 8 a cup
  and the person holding it share cells, and even a hand-made nearness probe falls to AP ~0.4).
- `actor_roi` (A, C, k, k): RoIAlign (torchvision, aligned) of the scene map over each row's box,
  GT or proposal, so a proposal's map is that of its own (jittered or wrong) box, and nearby objects
  and people show up in it exactly where they overlap the box.
- `actor_temporal` (A, S, C): S = `temporal_steps` tokens at times t + o_j evenly spread over the
  clip [t - 1, t + 1] (a SlowFast clip spans ~2 s around its keyframe); token j of a GT actor is
  POSE_CODE[pose(t + o_j)] + id_scale * identity + noise, so the pose of the previous (and next)
  second is visible in the sequence, as in a real clip. Proposals copy their GT source's sequence
  plus 0.3 x noise; false positives get random tokens.

The pooled feature stays the actor-only vector (not the mean of these levels): the comparison is
"does a head recover the relation from the level it reads", and `linear` on pooled features stays
the same baseline whatever levels a store also holds.
"""
from __future__ import annotations

import numpy as np
import torch

CONTEXT_CODE_SEED = 20240918  # fixed, like CODE_SEED: identical across splits and seeds


def context_codes(num_classes: int, dim: int) -> np.ndarray:
    """(num_classes, dim) unit codes of object classes as they appear in the scene map."""
    rng = np.random.default_rng([CONTEXT_CODE_SEED, num_classes, dim])
    c = rng.standard_normal((num_classes, dim))
    return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)


def coverage(box: np.ndarray, grid: int) -> np.ndarray:
    """(N, 4) normalised boxes -> (N, grid, grid) fraction of each cell inside the box.

    Boxes narrower (shorter) than one cell are grown to one cell around their centre.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1, 4)
    c = (b[:, :2] + b[:, 2:]) / 2
    half = np.maximum((b[:, 2:] - b[:, :2]) / 2, 0.5 / grid)
    lo, hi = c - half, c + half  # (N, 2) x, y
    edges = np.arange(grid) / grid  # cell starts
    # Overlap of [lo, hi] with each cell [e, e + 1/grid], as a fraction of the cell's side.
    ov = np.clip(np.minimum(hi[:, :, None], edges + 1 / grid) - np.maximum(lo[:, :, None], edges), 0, None) * grid
    return (ov[:, 1, :, None] * ov[:, 0, None, :]).astype(np.float32)  # (N, H=y, W=x)


def scene_maps(num_keyframes: int, grid: int, actor_kf, actor_box, actor_feat, object_kf, object_box,
               object_code, rng: np.random.Generator, map_noise: float) -> torch.Tensor:
    """(K, C, grid, grid) scene maps of one video (see the module docstring)."""
    dim = actor_feat.shape[1]
    maps = torch.zeros(num_keyframes, grid * grid, dim)
    for kf, box, feat in ((actor_kf, actor_box, actor_feat), (object_kf, object_box, object_code)):
        if len(kf) == 0:
            continue
        cov = torch.from_numpy(coverage(box, grid).reshape(len(kf), -1))  # (N, G*G)
        cov = cov / cov.amax(dim=1, keepdim=True).clamp(min=1e-6)  # peak 1: a small object still lights its cell
        maps.index_add_(0, torch.as_tensor(kf, dtype=torch.long),
                        cov[:, :, None] * torch.as_tensor(feat, dtype=torch.float32)[:, None, :])
    noise = rng.standard_normal(maps.shape, dtype=np.float32) * np.float32(map_noise / np.sqrt(dim))
    maps += torch.from_numpy(noise)
    return maps.reshape(num_keyframes, grid, grid, dim).permute(0, 3, 1, 2).contiguous()


def context_level(maps: torch.Tensor, size: int) -> np.ndarray:
    """(K, C, G, G) -> (K, C, size, size) average-pooled context maps."""
    return torch.nn.functional.adaptive_avg_pool2d(maps, size).numpy()


def roi_level(maps: torch.Tensor, actor_kf, actor_box, size: int) -> np.ndarray:
    """RoIAlign of each row's box on its keyframe's scene map -> (A, C, size, size)."""
    from torchvision.ops import roi_align

    grid = maps.shape[-1]
    rois = torch.cat((torch.as_tensor(actor_kf, dtype=torch.float32)[:, None],
                      torch.as_tensor(actor_box, dtype=torch.float32)), dim=1)  # (A, 5)
    return roi_align(maps, rois, output_size=size, spatial_scale=float(grid), sampling_ratio=2,
                     aligned=True).numpy()


def temporal_offsets(steps: int) -> np.ndarray:
    """(steps,) offsets in seconds: centres of `steps` equal bins of [-1, 1]."""
    return -1.0 + (2 * np.arange(steps) + 1) / steps


def temporal_level(video, actor_kf, actor_person, identity, pose_code, *, steps: int, id_scale: float,
                   noise_scale: float, rng: np.random.Generator) -> np.ndarray:
    """(A_gt, steps, C) token sequences of a video's GT rows (see the module docstring)."""
    times = video.keyframe_times[:, None] + temporal_offsets(steps)[None]  # (T, S)
    pose = video.poses_at(times.reshape(-1)).reshape(times.shape[0], steps, -1)  # (T, S, Na)
    row_pose = pose[actor_kf, :, actor_person]  # (A_gt, S)
    n, dim = row_pose.shape[0], pose_code.shape[1]
    return (pose_code[row_pose] + id_scale * identity[actor_person][:, None, :]
            + noise_scale * rng.standard_normal((n, steps, dim), dtype=np.float32)).astype(np.float32)
