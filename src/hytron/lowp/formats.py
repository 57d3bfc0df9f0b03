"""Element formats (E4M3, E5M2, E2M1, E8M0, BF16): exact rounding of fp32 values onto each format's grid.

Everything here works on *unscaled* fp32 values: scaling (per tensor, per block) lives in `quantize.py`.
Rounding is either round-to-nearest-even (RNE, IEEE ties-to-even) or stochastic rounding (SR), both
saturating at the format's largest finite value ("satfinite", as NVIDIA's `cvt.*.satfinite` and TE do):
finite overflow and ±Inf become ±max, NaN stays NaN, and the sign of zero is kept. The grid arithmetic
is exact: a value's step is a power of two found with `frexp`, so `a / step` and `round(.) * step` never
round (lowprec.md §3.2-3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP32_MAX = torch.finfo(torch.float32).max
ROUNDINGS = ("rne", "sr")


@dataclass(frozen=True)
class ElementFormat:
    """A minifloat: `mbits` explicit mantissa bits, smallest normal exponent `emin`, largest finite `max`."""

    name: str
    mbits: int
    emin: int
    max: float
    has_inf: bool

    @property
    def emax(self) -> int:
        """Exponent of the largest binade (8 for E4M3, 15 for E5M2, 2 for E2M1): the OCP MX `emax_elem`."""
        return int(torch.tensor(self.max).log2().floor().item())


E4M3 = ElementFormat("e4m3", mbits=3, emin=-6, max=448.0, has_inf=False)  # float8_e4m3fn: no inf
E5M2 = ElementFormat("e5m2", mbits=2, emin=-14, max=57344.0, has_inf=True)
E2M1 = ElementFormat("e2m1", mbits=1, emin=0, max=6.0, has_inf=False)  # ±{0, .5, 1, 1.5, 2, 3, 4, 6}
ELEMENTS = {f.name: f for f in (E4M3, E5M2, E2M1)}

# E2M1 magnitudes by code 0..7; code | 0x8 is the negative (0x8 itself is -0).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _step_ref(a: torch.Tensor, fmt: ElementFormat) -> torch.Tensor:
    """Grid spacing at magnitude `a` (>= 0): 2^(max(floor(log2 a), emin) - mbits); subnormals share emin's."""
    _, e = torch.frexp(a)  # a = m * 2^e with m in [0.5, 1), so floor(log2 a) = e - 1
    e = torch.where(a == 0, fmt.emin + 1, e)  # frexp(0) gives e = 0; zero lives in the subnormal binade
    exponent = (e - 1).clamp(min=fmt.emin) - fmt.mbits
    return torch.ldexp(torch.ones_like(a), exponent)


def _step(a: torch.Tensor, fmt: ElementFormat) -> torch.Tensor:
    """_step_ref in three passes: keep only a's fp32 exponent bits (2^floor(log2 a); 0 for 0/subnormals)."""
    pow2 = (a.view(torch.int32) & 0x7F800000).view(torch.float32)
    return pow2.clamp_(min=2.0**fmt.emin).mul_(2.0**-fmt.mbits)


def round_to_format_ref(
    y: torch.Tensor,
    fmt: ElementFormat,
    rounding: str = "rne",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round fp32 `y` onto `fmt`'s grid (saturating): RNE, or SR with uniform `noise` in [0, 1).

    The plain reference (frexp/ldexp); `round_to_format` is the faster twin, tested to agree bit for bit.
    SR: q = floor(|y| + u * step(|y|)) on the grid (the step is recomputed at the sum, which may cross
    into the next binade), so E[q] = y for |y| <= max. `noise` (same shape) overrides the generator draw,
    which lets tests replay one draw.
    """
    if y.dtype != torch.float32:
        raise TypeError(f"round_to_format expects float32 values, got {y.dtype}")
    a = y.abs().clamp(max=fmt.max)  # satfinite: inf -> max; NaN stays NaN
    if rounding == "rne":
        step = _step_ref(a, fmt)
        m = torch.round(a / step) * step  # torch.round is round-half-to-even; /step and *step are exact
    elif rounding == "sr":
        u = noise if noise is not None else torch.rand(y.shape, generator=generator, device=y.device)
        t = a + u * _step_ref(a, fmt)
        step_t = _step_ref(t, fmt)
        m = torch.floor(t / step_t) * step_t
    else:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return torch.copysign(m.clamp(max=fmt.max), y)


_TORCH_FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def round_to_format(
    y: torch.Tensor,
    fmt: ElementFormat,
    rounding: str = "rne",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round fp32 `y` onto `fmt`'s grid, saturating: RNE or SR. Same results as `round_to_format_ref`.

    Faster: FP8 RNE is torch's own (RNE) cast after clamping; otherwise the step comes from exponent bits
    and the arithmetic runs in place. RNE never needs the final clamp (max is a grid point).
    """
    if y.dtype != torch.float32:
        raise TypeError(f"round_to_format expects float32 values, got {y.dtype}")
    if rounding == "rne" and fmt.name in _TORCH_FP8:
        return y.clamp(-fmt.max, fmt.max).to(_TORCH_FP8[fmt.name]).to(torch.float32)
    a = y.abs().clamp_(max=fmt.max)  # satfinite: inf -> max; NaN stays NaN
    if rounding == "rne":
        step = _step(a, fmt)
        m = a.div_(step).round_().mul_(step)  # round-half-to-even; dividing by a power of two is exact
    elif rounding == "sr":
        u = noise if noise is not None else torch.rand(y.shape, generator=generator, device=y.device)
        t = a.addcmul_(u, _step(a, fmt))
        step_t = _step(t, fmt)
        m = t.div_(step_t).floor_().mul_(step_t).clamp_(max=fmt.max)
    else:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return m.copysign_(y)


def e2m1_codes(values: torch.Tensor) -> torch.Tensor:
    """4-bit E2M1 codes (uint8, 0..15) of values already on the E2M1 grid; -0 -> 0x8. NaN is not encodable."""
    if torch.isnan(values).any():
        raise ValueError("e2m1_codes: NaN has no E2M1 encoding (the NaN lives in the block scale)")
    grid = torch.tensor(E2M1_VALUES, device=values.device)
    mag = values.abs()
    idx = torch.searchsorted(grid, mag)
    if not torch.equal(grid[idx.clamp(max=7)], mag):
        raise ValueError("e2m1_codes: some values are not on the E2M1 grid")
    return (idx + 8 * torch.signbit(values).long()).to(torch.uint8)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes two per byte along the last dim, element 2i in the low nibble (TE/torchao layout)."""
    if codes.shape[-1] % 2:
        raise ValueError(f"pack_fp4 needs an even last dimension, got {codes.shape[-1]}")
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def fp8_bytes(values: torch.Tensor, fmt: ElementFormat) -> torch.Tensor:
    """The byte of each value (exactly representable in `fmt`) as stored in float8_e4m3fn / float8_e5m2."""
    dtype = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}[fmt.name]
    return values.to(dtype).view(torch.uint8)


def e8m0_bytes(scales: torch.Tensor) -> torch.Tensor:
    """E8M0 byte (biased exponent, 0xFF = NaN) of power-of-two scales 2^-127..2^127."""
    _, e = torch.frexp(scales)
    biased = (e - 1 + 127).clamp(0, 254)
    return torch.where(torch.isnan(scales), 255, biased).to(torch.uint8)
