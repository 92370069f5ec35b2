"""The one warning for randomly initialised weights (backbones and detectors: tests and the demo only)."""
from __future__ import annotations

import warnings

__all__ = ["RandomWeightsWarning", "warn_random_init"]


class RandomWeightsWarning(UserWarning):
    """A backbone or detector runs with random weights: its outputs are meaningless (tests / demo only)."""


def warn_random_init(what: str, *, stacklevel: int = 2) -> None:
    """Warn that `what` has random weights; `stacklevel` as for `warnings.warn`, seen from the caller."""
    msg = (f"{what} is RANDOMLY INITIALISED (random weights, --random-init): its outputs (detections, "
           "features) are meaningless. Use this only for tests and the demo; pass real weights for any experiment.")
    warnings.warn(msg, RandomWeightsWarning, stacklevel=stacklevel + 1)
