"""What a comparison test checks before comparing: that there is something to compare.

Two models that both return nothing (every detection thresholded away, an empty selection) or
the same row for every input (a saturated or dead layer, a branch whose contribution is zero)
agree exactly and prove nothing: a test comparing our computation with a reference (another
implementation, the original code, a loop written from the paper) asserts `assert_informative`
on what it compares.
"""
from __future__ import annotations

import numpy as np
import torch


def assert_informative(x, what: str, *, min_len: int = 1, above: float = 0.0) -> None:
    """`x` (tensor or array) has at least `min_len` rows, finite values, and rows that differ (with
    one row: values that differ) by more than `above` somewhere (give the comparison's absolute
    tolerance, which would otherwise swallow the differences), so that two outputs agreeing on it
    says something."""
    t = (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))).detach()
    assert t.dim() > 0 and t.numel() > 0, f"{what}: empty, shape {tuple(t.shape)}"
    assert t.shape[0] >= min_len, f"{what}: {t.shape[0]} rows, need at least {min_len} to compare"
    if t.is_floating_point() or t.is_complex():
        assert torch.isfinite(t).all(), f"{what}: non-finite values"
    rows = t.reshape(t.shape[0], -1)
    if rows.shape[0] == 1:
        rows = rows.reshape(-1, 1)
    assert (rows != rows[:1]).any(), f"{what}: every row is the same: a comparison would test nothing"
    if above > 0:
        spread = (rows.double() - rows[:1].double()).abs().max().item()
        assert spread > above, f"{what}: rows differ by {spread:g} at most, within the tolerance {above:g}"
