"""The RHT is orthogonal, leaves an unquantized weight gradient unchanged, and is unbiased through SR."""

import pytest
import torch

from hytron.lowp import fake_quantize, hadamard, rht, rht_matrix
from hytron.lowp.hadamard import TE_SIGNS, random_signs


@pytest.mark.parametrize("n", [2, 16, 32])
def test_hadamard_is_orthogonal(n):
    h = hadamard(n)
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(h @ h.t(), n * torch.eye(n))
    r = rht_matrix(n, seed=5)
    assert torch.allclose(r @ r.t(), torch.eye(n), atol=1e-6)


def test_16_point_rht_is_exactly_orthogonal_with_te_signs():
    r = rht_matrix(16)  # entries ±0.25: R Rᵀ = I with no rounding at all
    assert torch.equal(r @ r.t(), torch.eye(16))
    assert torch.equal(r, torch.tensor(TE_SIGNS, dtype=torch.float32)[:, None] * hadamard(16) / 4)
    assert torch.equal(r.to(torch.bfloat16).float(), r)


def test_random_signs_are_seeded_and_not_trivial():
    a, b = random_signs(16, 1), random_signs(16, 2)
    assert torch.equal(a, random_signs(16, 1)) and not torch.equal(a, b)
    assert 0 < (a > 0).sum() < 16
    with pytest.raises(ValueError, match="power of two"):
        hadamard(12)
    with pytest.raises(ValueError, match="seed"):
        random_signs(32, None)


def test_rht_preserves_the_weight_gradient_product_and_pads_tokens():
    g = torch.Generator().manual_seed(0)
    m, n, k = 37, 24, 40  # 37 tokens: padded to 48 inside rht
    dy, x = torch.randn(m, n, generator=g), torch.randn(m, k, generator=g)
    r = rht_matrix()
    dyt, xt = rht(dy.t(), r), rht(x.t(), r)
    assert dyt.shape == (n, 48) and xt.shape == (k, 48)
    torch.testing.assert_close(dyt @ xt.t(), dy.t() @ x, atol=1e-4, rtol=1e-5)
    # it spreads an outlier token over its 16-token tile
    spike = torch.zeros(1, 16)
    spike[0, 3] = 16.0
    assert torch.equal(rht(spike, r).abs(), torch.full((1, 16), 4.0))
    assert rht(x.t().to(torch.bfloat16), r).dtype == torch.bfloat16


def test_rht_nvfp4_weight_gradient_matches_unquantized_in_expectation():
    # both wgrad operands SR-quantized after the RHT: independent unbiased draws, so E[dW_q] = dYᵀ X
    g = torch.Generator().manual_seed(1)
    m, n, k = 64, 32, 48
    dy, x = torch.randn(m, n, generator=g), torch.randn(m, k, generator=g)
    x[5] *= 50  # an outlier token
    exact = dy.t() @ x
    r = rht_matrix()
    dyt, xt = rht(dy.t(), r), rht(x.t(), r)
    draws = [fake_quantize(dyt, "nvfp4", rounding="sr", generator=g)
             @ fake_quantize(xt, "nvfp4", rounding="sr", generator=g).t() for _ in range(400)]
    rel = lambda a: ((a - exact).norm() / exact.norm()).item()
    single = sum(rel(d) for d in draws[:20]) / 20
    assert rel(torch.stack(draws).mean(0)) < single / 8  # error falls like 1/sqrt(draws): bias is small
