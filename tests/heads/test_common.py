"""heads/common.py: MaskDropout draws the distribution of nn.Dropout; elu equals F.elu."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stagecache.heads.common import MaskDropout


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


def test_elu_equals_torch_elu_in_values_and_gradients():
    from stagecache.heads.common import elu

    torch.manual_seed(0)
    base = torch.cat((torch.randn(50_000) * 4, torch.randn(5_000) * 1e-4,
                      torch.tensor([0.0, -0.0, 1e-30, -1e-30, -100.0, 80.0, float("inf"), float("-inf")])))
    for dtype, rtol in ((torch.float32, 0.0), (torch.bfloat16, 2.0 ** -8)):
        # Contiguous, and the strided view STAGE passes (each head's real channels of a padded row).
        padded = torch.zeros(len(base), 3, dtype=dtype)
        padded[:, 0] = base
        for leaf, view in ((base.to(dtype), lambda t: t), (padded, lambda t: t[:, :2])):
            leaf = leaf.clone().requires_grad_(True)
            x = view(leaf)
            # float32: exp(x) - 1 against expm1 differs by the exp's rounding near 1; bfloat16:
            # computed in float32 and rounded once (2^-8 relative). Gradients: torch's own, bit for bit.
            ref = F.elu(x.detach().double())  # at the same (rounded) inputs
            (gref,) = torch.autograd.grad(F.elu(x).sum(), leaf)
            y = elu(x)
            assert y.dtype == dtype
            (g,) = torch.autograd.grad(y.sum(), leaf)
            torch.testing.assert_close(y.double(), ref, rtol=rtol, atol=1.2e-7)
            torch.testing.assert_close(g, gref, rtol=0, atol=0)
    nan = torch.tensor([float("nan")])
    assert elu(nan).isnan().all()
    # float64 is torch's own ELU.
    x = torch.randn(1000, dtype=torch.float64)
    assert torch.equal(elu(x), F.elu(x))
