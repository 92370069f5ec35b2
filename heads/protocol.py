"""What a stage-2 head is, and what it may offer beyond its forward: the one contract the training
loop (pipelines/training/train.py, pipelines/training/steps.py), the bank writer (pipelines/training/acfb.py), class-balanced retraining
(pipelines/training/balanced.py) and `visualize` code against.

`Head` is the declared interface (a `typing.Protocol`): every entry of `heads.HEADS` builds an
object that satisfies it, and the callers use nothing else of a head. `HeadBase` is the
`nn.Module` every head in this package derives from; it gives each optional capability its
default, so a new head writes `forward` (and sets `temporal_radius` / `requires`) and overrides
only what it really offers. Capabilities are declared, never discovered: a caller asks
`head.has_aux_loss`, `head.has_first_order_maps`, `head.bank`, never `hasattr` or a class name.

Required:
  forward(x) -> (A, num_classes) logits for every actor of `x` (only `x.is_query` rows are read).
  temporal_radius: float seconds; the data pipeline adds every keyframe of the same video within
    it (0: the query keyframes alone).
  requires: frozenset of optional store levels the head reads ("objects", "context", "roi",
    "temporal", "tracks").
Optional (default in `HeadBase`):
  forward_with_aux(x, labels) -> (logits, aux): an auxiliary training loss, returned with the
    logits of the same forward. `labels` (A, num_classes) multi-hot for every actor of `x` (zeros
    where unknown) or None. Default: (forward(x), 0). `has_aux_loss` (default False) tells the loop
    whether building per-actor labels is worth it; calling without them is always allowed.
  first_order_maps(x) -> (A, C, H, W): per-actor relation maps that a feature bank stores
    (ACAR-Net's ACFB). `has_first_order_maps` declares it; the default raises `CapabilityError`.
  bank: True when forward reads a stored bank, x.extras["bank_maps"] (M, ...) and
    x.extras["bank_kf"] (M,), which the loop attaches from a write-bank group. Default False.
  classifier_parameters() -> the final classifier's parameters (decoupled class-balanced
    retraining trains only these). Default: the parameters of the submodule `classifier`.
  forward_with_attention(x) -> (logits, Attention | None): the attention weights the forward
    actually computed, returned with its logits (nothing is recomputed or patched). Default:
    (forward(x), None).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .batch import HeadInput

ATTENTION_KINDS = ("graph", "spatial")


class CapabilityError(ValueError):
    """A caller asked a head for a capability it does not declare."""


@dataclass
class Attention:
    """Attention weights of one forward, one entry per layer (or block), in forward order.

    kind "graph" (STAGE): weights[l] (N, N) float, the mean over attention heads, row i = the
      weight node i gives node j; connected[l] (N, N) bool, the graph's edges. Nodes are the
      batch's actors, then its objects when the head uses objects (N == A + O), else actors only.
    kind "spatial" (ACAR-Net HR²O): weights[l] (H, W, A, M) float, Att^{ij}_{xy} of actor i over
      key j (the batch's actors, or the bank entries of a bank head); `connected` is empty.
    """

    kind: str
    weights: list[Tensor]
    connected: list[Tensor] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention kind {self.kind!r}; valid: {', '.join(ATTENTION_KINDS)}")


@runtime_checkable
class Head(Protocol):
    """The contract of a stage-2 head; see the module docstring for every member."""

    temporal_radius: float
    requires: frozenset[str]
    bank: bool
    has_aux_loss: bool
    has_first_order_maps: bool

    def forward(self, x: HeadInput) -> Tensor: ...

    def __call__(self, x: HeadInput) -> Tensor: ...

    def forward_with_aux(self, x: HeadInput, labels: Tensor | None) -> tuple[Tensor, Tensor]: ...

    def first_order_maps(self, x: HeadInput) -> Tensor: ...

    def classifier_parameters(self) -> Iterable[nn.Parameter]: ...

    def forward_with_attention(self, x: HeadInput) -> tuple[Tensor, Attention | None]: ...


class HeadBase(nn.Module):
    """Defaults of every optional capability of `Head` (module docstring). Subclasses set
    `temporal_radius` / `requires` (class or instance attributes) and write `forward`."""

    temporal_radius: float = 0.0
    requires: frozenset[str] = frozenset()
    bank: bool = False
    has_aux_loss: bool = False
    has_first_order_maps: bool = False

    def forward_with_aux(self, x: HeadInput, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """(logits, aux loss) of one forward; no auxiliary loss by default (a zero scalar)."""
        logits = self(x)
        return logits, logits.new_zeros((), dtype=torch.float32)

    def first_order_maps(self, x: HeadInput) -> Tensor:
        raise CapabilityError(f"{type(self).__name__} has no first_order_maps")

    def classifier_parameters(self) -> Iterable[nn.Parameter]:
        """The final classifier's parameters: those of the submodule `classifier` by default."""
        classifier = dict(self.named_children()).get("classifier")
        if classifier is None:
            raise CapabilityError(f"{type(self).__name__} has no submodule named 'classifier'; "
                                  "override classifier_parameters() to name its final classifier")
        return classifier.parameters()

    def forward_with_attention(self, x: HeadInput) -> tuple[Tensor, Attention | None]:
        """(logits, attention of that forward); heads without attention to show return None."""
        return self(x), None
