"""Element rounding agrees bit for bit with ml_dtypes (RNE), saturates, keeps -0 and NaN; SR is unbiased."""

import ml_dtypes
import numpy as np
import pytest
import torch

from hytron.lowp.formats import (
    E2M1,
    E4M3,
    E5M2,
    e2m1_codes,
    e8m0_bytes,
    fp8_bytes,
    pack_fp4,
    round_to_format,
    round_to_format_ref,
)

ORACLE = {"e2m1": ml_dtypes.float4_e2m1fn, "e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}


def oracle_round(x: torch.Tensor, fmt) -> torch.Tensor:
    """ml_dtypes RNE cast of x clamped to ±max (ml_dtypes itself overflows to NaN/Inf; we saturate)."""
    a = np.clip(x.numpy().astype(np.float32), -fmt.max, fmt.max)
    return torch.from_numpy(a.astype(ORACLE[fmt.name]).astype(np.float32))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values including the sign of zero, NaN matching NaN."""
    both_nan = torch.isnan(a) & torch.isnan(b)
    return bool(((a.view(torch.int32) == b.view(torch.int32)) | both_nan).all())


def adversarial(fmt) -> torch.Tensor:
    """Every grid point, every midpoint (tie) and their fp32 neighbours, ±0, tiny, huge, both signs."""
    grid = torch.from_numpy(np.arange(256 if fmt.name != "e2m1" else 16, dtype=np.uint8)
                            .view(ORACLE[fmt.name]).astype(np.float32))
    grid = grid[torch.isfinite(grid)].unique()
    mids = (grid[1:] + grid[:-1]) / 2
    pts = torch.cat([grid, mids])
    up, down = torch.nextafter(pts, torch.tensor(np.inf)), torch.nextafter(pts, torch.tensor(-np.inf))
    pts = torch.cat([pts, up, down])
    extra = torch.tensor([0.0, -0.0, 1e-30, 1e-45, fmt.max * 1.01, fmt.max * 1e3, 3e38, 2.0**-140])
    pts = torch.cat([pts, extra])
    return torch.cat([pts, -pts]).to(torch.float32)


@pytest.mark.parametrize("round_fn", [round_to_format, round_to_format_ref], ids=["fast", "ref"])
@pytest.mark.parametrize("fmt", [E2M1, E4M3, E5M2], ids=lambda f: f.name)
def test_rne_matches_ml_dtypes_on_ties_neighbours_and_extremes(fmt, round_fn):
    x = adversarial(fmt)
    ours = round_fn(x, fmt, "rne")
    assert same_bits(ours, oracle_round(x, fmt)), fmt.name


@pytest.mark.parametrize("fmt", [E2M1, E4M3, E5M2], ids=lambda f: f.name)
def test_fast_stochastic_rounding_equals_the_reference_for_the_same_noise(fmt):
    g = torch.Generator().manual_seed(2)
    x = torch.cat([adversarial(fmt), torch.randn(50_000, generator=g) * fmt.max / 4])
    x = x[~torch.isnan(x)]
    for _ in range(3):
        u = torch.rand(x.shape, generator=g)
        assert same_bits(round_to_format(x, fmt, "sr", noise=u), round_to_format_ref(x, fmt, "sr", noise=u))


@pytest.mark.parametrize("fmt", [E2M1, E4M3, E5M2], ids=lambda f: f.name)
def test_rne_matches_ml_dtypes_on_random_wide_range(fmt):
    g = torch.Generator().manual_seed(1)
    mag = torch.exp2(torch.empty(200_000).uniform_(-30, 20, generator=g))
    x = (torch.randn(200_000, generator=g).sign() * mag).to(torch.float32)
    x = torch.cat([x, torch.linspace(-8, 8, 16385)])  # a dense grid through E2M1's whole range
    assert same_bits(round_to_format(x, fmt, "rne"), oracle_round(x, fmt))


def test_torch_fp8_casts_used_for_scales_agree_with_ml_dtypes():
    # quantize.py rounds NVFP4 block scales with torch's float8_e4m3fn cast (after clamping to 448)
    x = torch.cat([adversarial(E4M3), torch.rand(100_000) * 500])
    x = x.abs().clamp(max=448)
    ours = x.to(torch.float8_e4m3fn).to(torch.float32)
    assert same_bits(ours, oracle_round(x, E4M3))


def test_saturation_nan_and_signed_zero():
    x = torch.tensor([7.0, -1e9, float("inf"), float("-inf"), float("nan"), -0.0, 0.0, -0.1])
    out = round_to_format(x, E2M1)
    assert out[:4].tolist() == [6.0, -6.0, 6.0, -6.0]
    assert torch.isnan(out[4])
    assert torch.signbit(out[5]) and not torch.signbit(out[6]) and torch.signbit(out[7]) and out[7] == 0
    e4 = round_to_format(torch.tensor([500.0, 464.0, 1e6]), E4M3)
    assert e4.tolist() == [448.0, 448.0, 448.0]  # ml_dtypes would give NaN above ~464: we clamp first
    with pytest.raises(TypeError, match="float32"):
        round_to_format(torch.ones(2, dtype=torch.bfloat16), E2M1)
    with pytest.raises(ValueError, match="rounding"):
        round_to_format(torch.ones(2), E2M1, "nearest")


def test_codes_and_bytes_match_ml_dtypes():
    vals = torch.tensor([0.0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])
    expected = torch.from_numpy(vals.numpy().astype(ml_dtypes.float4_e2m1fn).view(np.uint8))
    assert torch.equal(e2m1_codes(vals), expected & 0xF)
    assert e2m1_codes(vals).tolist() == list(range(16))
    assert pack_fp4(e2m1_codes(vals)).tolist() == [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE]
    with pytest.raises(ValueError, match="not on the E2M1 grid"):
        e2m1_codes(torch.tensor([0.7]))
    e4 = round_to_format(torch.randn(1000) * 50, E4M3)
    assert torch.equal(fp8_bytes(e4, E4M3), torch.from_numpy(e4.numpy().astype(ml_dtypes.float8_e4m3fn)
                                                             .view(np.uint8)))
    e5 = round_to_format(torch.randn(1000) * 5000, E5M2)
    assert torch.equal(fp8_bytes(e5, E5M2), torch.from_numpy(e5.numpy().astype(ml_dtypes.float8_e5m2)
                                                             .view(np.uint8)))


def test_e8m0_bytes_match_ml_dtypes():
    scales = torch.ldexp(torch.ones(255), torch.arange(-127, 128))
    expected = scales.numpy().astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    assert e8m0_bytes(scales).tolist() == expected.tolist() == list(range(255))
    assert e8m0_bytes(torch.tensor([float("nan")])).item() == 0xFF


@pytest.mark.parametrize("fmt", [E2M1, E4M3], ids=lambda f: f.name)
def test_stochastic_rounding_is_unbiased_and_lands_on_neighbours(fmt):
    g = torch.Generator().manual_seed(0)
    v = torch.linspace(-fmt.max, fmt.max, 257) * 0.999  # grid points and everything between
    v = torch.cat([v, v / 64])  # and E4M3's subnormal range
    draws = 4000
    q = round_to_format(v.repeat(draws, 1), fmt, "sr", generator=g)
    toward_zero = round_to_format(v, fmt, "sr", noise=torch.zeros_like(v))
    away = round_to_format(v, fmt, "sr", noise=torch.full_like(v, 1 - 2**-24))
    assert ((q == toward_zero) | (q == away)).all()  # only the two grid neighbours are ever drawn
    mean = q.double().mean(0)
    step = (away - toward_zero).abs().double()
    # |E[q] - v| within 5 standard errors (std <= step / 2); and far below round-to-nearest's error
    assert ((mean - v.double()).abs() <= 5 * step / 2 / draws**0.5 + 1e-12).all()
    rn_err = (round_to_format(v, fmt, "rne") - v).abs().double().mean()
    assert (mean - v.double()).abs().mean() < rn_err / 10


def test_stochastic_rounding_uses_the_noise_it_is_given():
    v = torch.tensor([0.6, -0.6, 2.2, 5.0])
    assert round_to_format(v, E2M1, "sr", noise=torch.zeros(4)).tolist() == [0.5, -0.5, 2.0, 4.0]
    near_one = torch.full((4,), 1 - 2**-24)
    assert round_to_format(v, E2M1, "sr", noise=near_one).tolist() == [1.0, -1.0, 3.0, 6.0]


def test_stochastic_rounding_is_not_silently_zero():
    # small magnitudes (below E2M1's 0.5) must still produce nonzero draws with the right probability
    g = torch.Generator().manual_seed(3)
    v = torch.full((100_000,), 0.1)
    q = round_to_format(v, E2M1, "sr", generator=g)
    frac = (q != 0).float().mean().item()
    assert abs(frac - 0.2) < 0.01, frac  # P(0.5) = 0.1 / 0.5
