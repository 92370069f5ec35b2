"""The backbone contract every `BACKBONES` entry satisfies (extract/backbones.py builds the CNNs,
extract/vit/ the video transformers): `Sampling`, the published clip sampling, and `VideoBackbone`,
the one wrapper (see extract/backbones.py for the data flow). Its own module so that both
registries' modules import it without importing each other.

Optional capabilities, with their defaults here (callers ask these, never the class):
  num_layers / forward_layers   per-block maps (`extract features --layers`; 0: none)
  roi_aligned / box_extend      the RoI pooling of the backbone's own AVA code (None: the
                                `--roi-aligned` option; no box extension)
  load_weights                  its checkpoint formats (default: extract/checkpoints.py)
  run_info                      what an extraction run saw (token grids, ...) for the summary
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

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
    def map_frames(self) -> int:
        """Time steps of the (slow) map `forward` returns (a ViT: frames / tubelet)."""
        return self.sampling.frames

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

    # ---- optional capabilities (defaults: a CNN of extract/backbones.py)
    num_layers: int = 0  # blocks whose maps `forward_layers` returns (1..num_layers); 0: none
    roi_aligned: bool | None = None  # RoIAlign `aligned` of the backbone's AVA code; None: --roi-aligned
    box_extend: tuple[float, float] | None = None  # (x, y) test-time box enlargement of that code

    def forward_layers(self, inputs: list[torch.Tensor], layers: tuple[int, ...]
                       ) -> tuple[list[torch.Tensor], dict[int, list[torch.Tensor]]]:
        """(the maps of `forward`, {block n: its maps}) in one pass; only when `num_layers` > 0."""
        raise ValueError(f"backbone {self.name!r} has no per-layer features (extract features --layers)")

    def load_weights(self, path, *, allow_partial: bool = False, trust_pickle: bool = False):
        """Load a checkpoint file into `.net` with strict key checking; returns a `LoadReport`."""
        from stagecache.extract.checkpoints import load_checkpoint
        return load_checkpoint(self.net, path, allow_partial=allow_partial, trust_pickle=trust_pickle)

    def run_info(self) -> dict[str, Any]:
        """What this backbone saw during a run, for the run's summary (nothing for the CNNs)."""
        return {}

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


def sampling_with_overrides(default: Sampling, overrides: dict | None) -> Sampling:
    """`default` with the fields of `overrides` replaced (tests: tiny frames); unknown fields raise."""
    if not overrides:
        return default
    d = asdict(default)
    unknown = set(overrides) - set(d)
    if unknown:
        raise ValueError(f"unknown sampling fields {sorted(unknown)}; valid: {sorted(d)}")
    d.update(overrides)
    d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
    return Sampling(**d)
