"""heads/common.py: MaskDropout draws the distribution of nn.Dropout."""
from __future__ import annotations

import torch

from heads.common import MaskDropout


def test_mask_dropout_is_inverted_dropout_with_keep_prob_1_minus_p():
    torch.manual_seed(0)
    drop = MaskDropout(0.3)
    x = torch.rand(200_000, dtype=torch.float64) + 0.5  # no zeros in the input
    x.requires_grad_(True)
    y = drop(x)
    kept = y != 0
    # Binomial(200k, 0.7): 4.6 standard deviations is ~0.0047.
    assert abs(kept.double().mean().item() - 0.7) < 0.0047
    assert torch.allclose(y[kept], x[kept] / 0.7)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad, kept.double() / 0.7)
    # Fresh masks each call; identity in eval mode and with p = 0.
    assert not torch.equal(drop(x) != 0, kept)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(MaskDropout(0.0)(x), x)
