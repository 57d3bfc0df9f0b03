"""The model's fused elementwise pieces equal their plain references, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from hytron.model.mamba2 import causal_conv
from hytron.model.mlp import relu2, relu2_ref


def test_relu2_values_and_gradient_equal_the_reference():
    x = torch.randn(3, 7, 11, dtype=torch.float64)
    x[0, 0, :3] = 0.0  # the kink: both give gradient 0 there
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = relu2(a), relu2_ref(b)
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-15, atol=0)
    assert torch.autograd.gradcheck(relu2, (torch.randn(4, 5, dtype=torch.float64, requires_grad=True) + 0.3,))


@pytest.mark.parametrize("bias", [True, False])
def test_causal_conv_equals_conv1d_over_channels(bias):
    g = torch.Generator().manual_seed(0)
    b, K, L, C = 2, 4, 19, 12
    full = torch.randn(b, K - 1 + L, C, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(C, 1, K, dtype=torch.float64, generator=g, requires_grad=True)
    bb = torch.randn(C, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    ref = F.silu(F.conv1d(full.transpose(1, 2), w, bb, groups=C)).transpose(1, 2)
    out = causal_conv(full, w, bb)
    assert out.shape == (b, L, C)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    params = [full, w] + ([bb] if bias else [])
    gy = torch.randn(b, L, C, dtype=torch.float64, generator=g)
    for p, q in zip(torch.autograd.grad((out * gy).sum(), params), torch.autograd.grad((ref * gy).sum(), params)):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
