import torch
from torch import nn

from pipelines.steps import make_optimizer


def test_fused_adam_on_cpu_matches_the_reference_update():
    torch.manual_seed(0)
    p1 = nn.Parameter(torch.randn(7, 3))
    p2 = nn.Parameter(p1.detach().clone())
    fused = make_optimizer([p1], 1e-2, 0.0, torch.device("cpu"))
    plain = torch.optim.Adam([p2], lr=1e-2, foreach=False)
    assert fused.defaults["fused"]
    for step in range(3):
        g = torch.randn(7, 3)
        p1.grad, p2.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-7)
