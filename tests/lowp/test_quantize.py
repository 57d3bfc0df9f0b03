"""Scaled formats: NVFP4, MX and per-tensor FP8 codes and scales match ml_dtypes and the golden vectors."""

import ml_dtypes
import numpy as np
import pytest
import torch

from hytron.lowp import AmaxHistory, fake_quantize, pack_fp4, quantize

F32 = np.float32
FMAX = np.finfo(F32).max


# ---------------------------------------------------------------------------------------------- oracles
def nvfp4_oracle(x: np.ndarray, tile=(1, 16), amax=None):
    """TE's NVFP4 arithmetic (lowprec.md §3.4) in numpy float32, with ml_dtypes doing every rounding.

    x: (R, C) float32 with R % tile[0] == 0 and C % 16 == 0. Returns (E2M1 values, E4M3 scales, S_dec).
    """
    x = x.astype(F32)
    r, c = x.shape
    tr, tc = tile
    blocks = np.abs(x).reshape(r // tr, tr, c // tc, tc).max(axis=(1, 3))
    amax = F32(np.abs(x).max()) if amax is None else F32(amax)
    with np.errstate(divide="ignore", over="ignore"):
        s_enc = F32(min(F32(448.0 * 6.0) / amax, FMAX)) if amax != 0 else F32(1.0)
    s_dec = F32(F32(1.0) / s_enc)
    mult = F32(s_enc * F32(1.0 / 6.0))
    s_b = np.minimum(blocks * mult, F32(448)).astype(ml_dtypes.float8_e4m3fn).astype(F32)
    with np.errstate(divide="ignore"):
        enc = np.minimum(F32(1.0) / (s_b * s_dec), FMAX).astype(F32)
    enc_full = np.repeat(np.repeat(enc, tr, 0), tc, 1)
    with np.errstate(over="ignore"):
        y = (x * enc_full).astype(F32)
    q = np.clip(y, -6, 6).astype(ml_dtypes.float4_e2m1fn).astype(F32)
    return q, s_b, s_dec


def mx_oracle(x: np.ndarray, elem: str, mode: str):
    """OCP MX with float64 log2 for the shared exponent and ml_dtypes for element and E8M0 casts."""
    elems = {"e4m3": (ml_dtypes.float8_e4m3fn, 448.0, 8), "e2m1": (ml_dtypes.float4_e2m1fn, 6.0, 2)}
    dt, maxpos, emax = elems[elem]
    r, c = x.shape
    amax = np.abs(x).reshape(r, c // 32, 32).max(-1).astype(np.float64)
    with np.errstate(divide="ignore"):
        if mode == "floor":
            e = np.floor(np.log2(amax)) - emax
        else:
            e = np.ceil(np.log2((amax.astype(F32) / F32(maxpos)).astype(np.float64)))
    e = np.where(amax == 0, -127, np.clip(e, -127, 127))
    scale = np.exp2(e).astype(F32)
    q = np.clip(x / np.repeat(scale, 32, 1), -maxpos, maxpos).astype(dt).astype(F32)
    return q, scale.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)


def make_inputs():
    """Random and adversarial (rows, 64) tensors: wide range, outliers, zeros, tiny, ties, bf16-exact."""
    g = np.random.default_rng(0)
    cases = {
        "randn": g.standard_normal((64, 64)),
        "wide": g.standard_normal((64, 64)) * np.exp2(g.uniform(-20, 20, (64, 64))),
        "outlier": np.where(g.random((64, 64)) < 0.01, 1e4, 1.0) * g.standard_normal((64, 64)),
        "tiny": g.standard_normal((64, 64)) * 1e-30,
        "zeros_and_ones": np.where(g.random((64, 64)) < 0.5, 0.0, 1.0) * np.sign(g.standard_normal((64, 64))),
        "ties": g.choice([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, 6, -0.25, -2.5, -5], (64, 64)),
        "block_flush": np.concatenate([np.full((64, 16), 1000.0), np.full((64, 48), 1e-3)], 1),
        "neg_zero": np.full((64, 64), -0.0),
    }
    bf16 = g.standard_normal((64, 64)).astype(F32)
    cases["bf16"] = torch.from_numpy(bf16).to(torch.bfloat16).float().numpy()
    return {k: v.astype(F32) for k, v in cases.items()}


CASES = make_inputs()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit patterns (so -0 != +0), NaN matching NaN."""
    both_nan = np.isnan(a) & np.isnan(b)
    return a.shape == b.shape and bool(np.all((a.view(np.int32) == b.view(np.int32)) | both_nan))


# ---------------------------------------------------------------------------------------------- NVFP4
@pytest.mark.parametrize("tile", [(1, 16), (16, 16)], ids=["1x16", "16x16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_nvfp4_codes_and_scales_match_oracle(case, tile):
    x = CASES[case]
    q = quantize(torch.from_numpy(x), "nvfp4", block=tile)
    values, scales, s_dec = nvfp4_oracle(x, tile)
    assert same(q.values.numpy(), values), "element values/codes differ"
    assert same(q.block_scale.numpy(), scales), "E4M3 block scales differ"
    assert q.tensor_scale.item() == s_dec
    expected = (values * np.repeat(np.repeat(scales, tile[0], 0), tile[1], 1)) * s_dec
    assert same(q.dequantize().numpy(), expected.astype(F32))


def test_nvfp4_input_dtype_bf16_equals_fp32_of_same_values():
    x = torch.randn(32, 48, dtype=torch.bfloat16)
    assert torch.equal(fake_quantize(x, "nvfp4"), fake_quantize(x.float(), "nvfp4"))


def test_nvfp4_golden_vector_a():
    x = torch.tensor([[0, .25, .75, 1.25, 1.75, 2.5, 3.5, 5, -.25, -.75, -1.25, -1.75, -2.5, -3.5, -5, 6,
                       .01, -.02, .03, .04, .05, .06, .07, .08, .09, .10, .11, .12, .13, .14, .15, -.16]])
    q = quantize(x, "nvfp4")
    assert q.scale_bytes().tolist() == [[0x7E, 0x54]]
    assert q.tensor_scale.item() == F32(1) / F32(448)  # S_enc = 448
    assert q.values[0, :16].tolist() == [0, 0, 1, 1, 2, 2, 4, 4, -0.0, -1, -1, -2, -2, -4, -4, 6]
    assert q.values[0, 16:].tolist() == [.5, -.5, 1, 1.5, 2, 2, 3, 3, 3, 4, 4, 4, 4, 6, 6, -6]
    packed = pack_fp4(q.codes())[0].tolist()
    assert packed[:8] == [0x00, 0x22, 0x44, 0x66, 0xA8, 0xCA, 0xEC, 0x7E]
    assert packed[8:] == [0x91, 0x32, 0x44, 0x55, 0x65, 0x66, 0x76, 0xF7]


def test_nvfp4_golden_vector_b_subnormal_and_flushed_blocks():
    x = torch.zeros(1, 48)
    x[0, 0], x[0, 16], x[0, 17], x[0, 32] = 1000, 5e-3, -2.5e-3, 1e-3
    q = quantize(x, "nvfp4")
    assert q.tensor_scale.item() == F32(1) / F32(2688 / F32(1000))  # S_enc = 2.688
    assert q.scale_bytes().tolist() == [[0x7E, 0x01, 0x00]]
    assert q.values[0, [0, 16, 17, 32]].tolist() == [6, 6, -3, 6]
    deq = q.dequantize()[0]
    assert deq[0].item() == 1000 and deq[32].item() == 0  # block 2: scale underflowed, flushed
    assert deq[16].item() == pytest.approx(0.0043597, rel=1e-4)
    assert deq[17].item() == pytest.approx(-0.0021798, rel=1e-4)
    assert pack_fp4(q.codes())[0, [0, 8, 16]].tolist() == [0x07, 0xD7, 0x07]


def test_nvfp4_2d_weights_are_transpose_consistent_and_1d_are_not():
    w = torch.randn(64, 48) * torch.exp2(torch.randint(-4, 4, (64, 48)).float())
    two_d = fake_quantize(w, "nvfp4", block=(16, 16))
    assert torch.equal(two_d, fake_quantize(w.t(), "nvfp4", block=(16, 16)).t())
    assert not torch.equal(fake_quantize(w, "nvfp4"), fake_quantize(w.t(), "nvfp4").t())


def test_nvfp4_edge_cases_zero_padding_nan_inf():
    assert torch.equal(fake_quantize(torch.zeros(3, 16), "nvfp4"), torch.zeros(3, 16))
    neg0 = fake_quantize(torch.full((1, 16), -0.0), "nvfp4")
    assert (neg0 == 0).all() and torch.signbit(neg0).all()
    x = torch.randn(5, 20)  # padded to (5, 32) / (16, 32) internally, cropped back
    for tile in [(1, 16), (16, 16)]:
        q = fake_quantize(x, "nvfp4", block=tile)
        assert q.shape == x.shape and (q - x).abs().max() < 0.5 * x.abs().max()
    x = torch.randn(2, 32)
    x[0, 3], x[1, 20] = float("nan"), float("inf")
    q = quantize(x, "nvfp4")
    deq = q.dequantize()
    assert torch.isnan(deq[0, :16]).all() and torch.isnan(deq[1, 16:]).all()  # the whole block is NaN
    assert torch.isfinite(deq[0, 16:]).all() and torch.isfinite(deq[1, :16]).all()
    assert torch.equal(deq[0, 16:], fake_quantize(torch.cat([x[0:1, 16:], x[1:2, :16]]), "nvfp4",
                                                  amax=x[torch.isfinite(x)].abs().max())[0])
    assert q.scale_bytes()[0, 0].item() == 0x7F  # E4M3 NaN


def test_nvfp4_amax_override_and_bad_tile():
    x = torch.randn(4, 32)
    wide = quantize(x, "nvfp4", amax=x.abs().max() * 8)
    assert (1 / wide.tensor_scale).item() == pytest.approx(2688 / (x.abs().max().item() * 8), rel=1e-6)
    with pytest.raises(ValueError, match="NVFP4 tile"):
        quantize(x, "nvfp4", block=(4, 16))
    with pytest.raises(ValueError, match="unknown quantized format"):
        quantize(x, "int4")


# ------------------------------------------------------------------------------------------------- MX
@pytest.mark.parametrize("mode", ["floor", "ceil"])
@pytest.mark.parametrize("fmt,elem", [("mxfp8", "e4m3"), ("mxfp4", "e2m1")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_mx_codes_and_e8m0_scales_match_oracle(case, fmt, elem, mode):
    x = CASES[case]
    q = quantize(torch.from_numpy(x), fmt, mx_scale=mode)
    values, scale_bytes = mx_oracle(x, elem, mode)
    assert same(q.values.numpy(), values)
    assert np.array_equal(q.scale_bytes().numpy(), scale_bytes)


def test_mx_floor_saturates_and_ceil_does_not():
    x = torch.zeros(1, 32)
    x[0, 0] = 7.5  # floor: 2^(2-2) = 1 -> 7.5 saturates to 6;  ceil: 2^ceil(log2(7.5/6)) = 2 -> 8
    assert fake_quantize(x, "mxfp4", mx_scale="floor")[0, 0].item() == 6.0
    assert fake_quantize(x, "mxfp4", mx_scale="ceil")[0, 0].item() == 8.0
    nan = torch.ones(1, 64)
    nan[0, 40] = float("inf")
    q = quantize(nan, "mxfp8")
    assert q.scale_bytes().tolist() == [[127 - 8, 0xFF]]  # 2^(floor(log2 1) - 8); Inf block -> NaN scale
    assert torch.isnan(q.dequantize()[0, 32:]).all()
    assert torch.equal(q.dequantize()[0, :32], torch.ones(32))


# ---------------------------------------------------------------------------------------- FP8 per tensor
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fp8_current_scaling_matches_oracle(case, fmt):
    x = CASES[case]
    dt, maxv = {"e4m3": (ml_dtypes.float8_e4m3fn, 448.0), "e5m2": (ml_dtypes.float8_e5m2, 57344.0)}[fmt]
    amax = F32(np.abs(x).max())
    scale = F32(F32(maxv) / amax) if amax > 0 else F32(1.0)
    values = np.clip((x * scale).astype(F32), -maxv, maxv).astype(dt).astype(F32)
    q = quantize(torch.from_numpy(x), fmt)
    assert same(q.values.numpy(), values)
    assert same(q.dequantize().numpy(), (values * (F32(1) / scale)).astype(F32))
    assert q.codes().numpy().tolist() == values.astype(dt).view(np.uint8).tolist()


def test_fp8_non_finite_inputs_follow_the_format():
    x = torch.tensor([1.0, float("nan"), float("inf"), -2.0])
    e4, e5 = fake_quantize(x, "e4m3"), fake_quantize(x, "e5m2")
    assert torch.isnan(e4[1]) and torch.isnan(e4[2])  # E4M3 has no Inf (ml_dtypes: Inf -> NaN)
    assert torch.isnan(e5[1]) and e5[2].item() == float("inf")
    assert e4[[0, 3]].tolist() == [1.0, -2.0]  # amax non-finite -> scale 1 (TE)


def test_delayed_scaling_uses_the_history_not_the_current_amax():
    h = AmaxHistory(length=3, fmt="e4m3")
    first = h.quantize(torch.full((4,), 1000.0))  # empty history -> scale 1 -> saturates at 448
    assert torch.equal(first.dequantize(), torch.full((4,), 448.0))
    second = h.quantize(torch.full((4,), 2.0))  # scale from amax 1000
    assert second.tensor_scale.item() == pytest.approx(1000 / 448)
    for _ in range(3):
        h.quantize(torch.full((4,), 2.0))
    assert h.amax().item() == 2.0  # 1000 fell out of the 3-step window
    with pytest.raises(ValueError, match="per-tensor FP8"):
        AmaxHistory(fmt="nvfp4")


def test_fake_quantize_identity_bf16_and_errors():
    x = torch.randn(8, 32)
    assert fake_quantize(x, "none") is x
    assert torch.equal(fake_quantize(x, "bf16"), x.to(torch.bfloat16).float())
    with pytest.raises(ValueError, match="per-tensor"):
        fake_quantize(x, "e4m3", block=32)
    with pytest.raises(ValueError, match="MX blocks"):
        fake_quantize(x, "mxfp4", block=(2, 16))
    with pytest.raises(ValueError, match="scale_mode"):
        fake_quantize(x, "mxfp4", mx_scale="round")


def test_nvfp4_stochastic_rounding_mean_beats_round_to_nearest():
    # TE's statistical SR test: the mean of many SR dequantizations is closer to x than one RN pass
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=g)
    rn = fake_quantize(x, "nvfp4")
    draws = torch.stack([fake_quantize(x, "nvfp4", rounding="sr", generator=g) for _ in range(64)])
    rmse = lambda a: (a - x).square().mean().sqrt().item()
    assert rmse(draws.mean(0)) < 0.3 * rmse(rn)
    assert (draws[0] != 0).float().mean() > 0.8  # never silently all-zero
    small = torch.randn(64, 256, generator=g) * 1e-7  # tiny gradients must survive SR, not flush to zero
    sr_small = fake_quantize(small, "nvfp4", rounding="sr", generator=g)
    assert (sr_small != 0).float().mean() > 0.8
