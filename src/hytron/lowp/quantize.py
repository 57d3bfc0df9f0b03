"""Scaled quantize-dequantize: per-tensor FP8, MXFP8/MXFP4 (1x32, E8M0) and NVFP4 (1x16/16x16, E4M3 + FP32).

Each quantizer returns a `Quantized` (grid values, block scales, tensor scale) whose `dequantize()` is the
fake-quantized tensor, and whose `codes()` / `scale_bytes()` are the bytes a kernel would store. Blocks
run along the last dimension (the GEMM contraction dimension); inputs of any rank are viewed as
(rows, last) and zero-padded to whole blocks (zeros never change a block's amax).

Arithmetic follows Transformer Engine's reference quantizer operation by operation (lowprec.md §3.4);
the order matters: it decides scale bytes. Non-finite inputs:
- per-tensor FP8: amax in {0, inf, NaN} -> scale 1 (TE); a NaN element stays NaN; an Inf element is Inf
  in E5M2 and NaN in E4M3 (it has no Inf), as `ml_dtypes` casts; finite overflow saturates.
- block formats (MX, NVFP4): a block holding NaN or Inf gets a NaN scale (E8M0 0xFF / E4M3 0x7F) and
  dequantizes to NaN as a whole (the OCP MX v1.0 rule); the tensor amax is taken over finite blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hytron.lowp.formats import (
    E2M1,
    E4M3,
    ELEMENTS,
    FP32_MAX,
    ElementFormat,
    e2m1_codes,
    e8m0_bytes,
    fp8_bytes,
    round_to_format,
)

NVFP4_TILES = ((1, 16), (16, 16))
MX_ELEMENTS = {"mxfp8": "e4m3", "mxfp4": "e2m1"}
MX_SCALE_MODES = ("floor", "ceil")


@dataclass
class Quantized:
    """A quantized tensor: `values` on the element grid (fp32, padded 2-D), decode scales, original shape.

    dequantize() = values * block_scale * tensor_scale (block scale broadcast over its block), cropped.
    """

    fmt: str
    values: torch.Tensor  # (R, C) padded, fp32 grid values
    block_scale: torch.Tensor | None  # (R / tile_rows, C / tile_cols) fp32, exact in E4M3 / E8M0
    tensor_scale: torch.Tensor  # () fp32 decode scale (1 for MX)
    tile: tuple[int, int]
    shape: torch.Size

    def dequantize(self) -> torch.Tensor:
        out = self.values
        if self.block_scale is not None:
            out = _times_blocks(out, self.block_scale, self.tile)
        out = out * self.tensor_scale  # NVFP4: (q * s) is exact in fp32, this is the one rounding
        rows, cols = _rows_cols(self.shape)
        return out[:rows, :cols].reshape(self.shape)

    def codes(self) -> torch.Tensor:
        """Element codes (uint8): E2M1 4-bit codes or FP8 bytes, padded 2-D; NaN-block elements are 0."""
        elem = ELEMENTS[MX_ELEMENTS.get(self.fmt, "e2m1" if self.fmt == "nvfp4" else self.fmt)]
        vals = torch.nan_to_num(self.values, nan=0.0) if elem is E2M1 else self.values
        return e2m1_codes(vals) if elem is E2M1 else fp8_bytes(vals, elem)

    def scale_bytes(self) -> torch.Tensor:
        """Block scale bytes: E4M3 for NVFP4, E8M0 for MX (NaN -> 0x7F / 0xFF)."""
        if self.block_scale is None:
            raise ValueError(f"{self.fmt} has no block scales (per-tensor format)")
        if self.fmt == "nvfp4":
            return fp8_bytes(self.block_scale, E4M3)
        return e8m0_bytes(self.block_scale)


def _rows_cols(shape: torch.Size) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    cols = shape[-1]
    return (shape.numel() // cols if cols else 0), cols


def _as_padded_2d(x: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """x as fp32 (rows, cols), zero-padded so both dims are whole tiles."""
    rows, cols = _rows_cols(x.shape)
    x2 = x.reshape(rows, cols).to(torch.float32)
    pr, pc = (-rows) % tile[0], (-cols) % tile[1]
    return torch.nn.functional.pad(x2, (0, pc, 0, pr)) if pr or pc else x2


def _block_amax(x2: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """Per-tile max |x| (NaN-propagating), shape (R / tr, C / tc)."""
    tr, tc = tile
    r, c = x2.shape
    return x2.abs().reshape(r // tr, tr, c // tc, tc).amax(dim=(1, 3))


def _times_blocks(x2: torch.Tensor, blocks: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """x2 (R, C) times a per-tile value (R / tr, C / tc), broadcast over each tile without expanding it."""
    tr, tc = tile
    r, c = x2.shape
    return (x2.reshape(r // tr, tr, c // tc, tc) * blocks[:, None, :, None]).reshape(r, c)


# ---------------------------------------------------------------------------------------- FP8 per tensor
def fp8_scale(amax: torch.Tensor, fmt: ElementFormat) -> torch.Tensor:
    """Per-tensor encode scale fp8_max / amax (fp32), 1 when amax is 0/Inf/NaN, FLT_MAX when it overflows."""
    amax = amax.to(torch.float32)
    scale = torch.tensor(fmt.max, dtype=torch.float32, device=amax.device) / amax
    scale = torch.where(torch.isinf(scale), FP32_MAX, scale)
    bad = (amax == 0) | ~torch.isfinite(amax)
    return torch.where(bad, torch.ones_like(scale), scale)


def quantize_fp8(
    x: torch.Tensor,
    fmt: str = "e4m3",
    amax: torch.Tensor | None = None,
    rounding: str = "rne",
    generator: torch.Generator | None = None,
) -> Quantized:
    """Per-tensor FP8 (E4M3/E5M2): q = round_sat(x * scale), deq = q * (1 / scale); current or given amax."""
    elem = ELEMENTS[fmt]
    xf = x.reshape(_rows_cols(x.shape)).to(torch.float32)
    if amax is None:
        amax = xf.abs().amax() if xf.numel() else torch.zeros((), device=x.device)
    scale = fp8_scale(amax, elem)
    q = round_to_format(xf * scale, elem, rounding, generator)
    inf = torch.isinf(xf)
    if inf.any():  # satfinite would clamp Inf; the format (and ml_dtypes) keeps Inf or has no code for it
        q = torch.where(inf, xf if elem.has_inf else torch.full_like(xf, float("nan")), q)
    return Quantized(fmt, q, None, 1.0 / scale, (1, 1), x.shape)


class AmaxHistory:
    """Delayed scaling state: the scale for step t comes from max(amax over the last `length` steps).

    Use `quantize(x)`: it quantizes with the history's amax (scale 1 while the history is empty, as TE
    starts), then records x's own amax (TE DelayedScaling, amax_compute_algo="max", margin 0).
    """

    def __init__(self, length: int = 1024, fmt: str = "e4m3"):
        if length < 1:
            raise ValueError(f"amax history length must be >= 1, got {length}")
        if fmt not in ("e4m3", "e5m2"):
            raise ValueError(f"delayed scaling is per-tensor FP8: fmt must be e4m3 or e5m2, got {fmt!r}")
        self.length, self.fmt = length, fmt
        self.history: torch.Tensor | None = None  # (length,) fp32, newest first
        self.steps = 0

    def amax(self) -> torch.Tensor:
        if self.history is None:
            return torch.zeros(())
        return self.history.amax()

    def record(self, amax: torch.Tensor) -> None:
        amax = amax.detach().to(torch.float32).reshape(1)
        if self.history is None:
            self.history = torch.zeros(self.length, device=amax.device)
        self.history = torch.cat([amax, self.history[:-1]])
        self.steps += 1

    def quantize(self, x, rounding: str = "rne", generator: torch.Generator | None = None) -> Quantized:
        q = quantize_fp8(x, self.fmt, amax=self.amax().to(x.device), rounding=rounding, generator=generator)
        self.record(x.detach().abs().amax() if x.numel() else torch.zeros((), device=x.device))
        return q


# --------------------------------------------------------------------------------------------------- MX
def quantize_mx(
    x: torch.Tensor,
    fmt: str = "mxfp8",
    block: int = 32,
    scale_mode: str = "floor",
    rounding: str = "rne",
    generator: torch.Generator | None = None,
) -> Quantized:
    """OCP MX: 1 x `block` blocks, a power-of-two E8M0 scale each, elements E4M3 (mxfp8) or E2M1 (mxfp4).

    scale_mode "floor" is the OCP MX v1.0 rule, X = 2^(floor(log2 amax) - emax_elem), which may saturate
    the block's largest elements; "ceil" is TE/cuBLAS/the NVFP4 paper's X = 2^ceil(log2(amax / max)), which
    never saturates but can waste up to one binade. Exponents clamp to [-127, 127]; a zero block gets 2^-127.
    """
    if fmt not in MX_ELEMENTS:
        raise ValueError(f"MX format must be one of {sorted(MX_ELEMENTS)}, got {fmt!r}")
    if scale_mode not in MX_SCALE_MODES:
        raise ValueError(f"MX scale_mode must be one of {MX_SCALE_MODES}, got {scale_mode!r}")
    elem = ELEMENTS[MX_ELEMENTS[fmt]]
    tile = (1, block)
    x2 = _as_padded_2d(x, tile)
    amax_b = _block_amax(x2, tile)  # (R, C / block)
    if scale_mode == "floor":
        _, e = torch.frexp(amax_b)  # floor(log2 amax) = e - 1
        exp = (e - 1) - elem.emax
    else:
        m, e = torch.frexp(amax_b / elem.max)  # ceil(log2 r) = e - 1 if r is a power of two (m == .5) else e
        exp = torch.where(m == 0.5, e - 1, e)
    exp = torch.where(amax_b == 0, -127, exp.clamp(-127, 127))
    scale = torch.ldexp(torch.ones_like(amax_b), exp)
    scale = torch.where(torch.isfinite(amax_b), scale, torch.full_like(scale, float("nan")))
    q = round_to_format(_times_blocks(x2, 1.0 / scale, tile), elem, rounding, generator)  # 2^-e: exact
    return Quantized(fmt, q, scale, torch.ones((), device=x.device), tile, x.shape)


# ------------------------------------------------------------------------------------------------ NVFP4
def nvfp4_global_encode_scale(amax: torch.Tensor) -> torch.Tensor:
    """S_enc = min(448 * 6 / amax, FLT_MAX) in fp32; 1 when amax is 0 or the quotient is 0 (TE kernel)."""
    amax = amax.to(torch.float32)
    s = (torch.tensor(E4M3.max * E2M1.max, device=amax.device) / amax).clamp(max=FP32_MAX)
    return torch.where((amax == 0) | (s == 0), torch.ones_like(s), s)


def quantize_nvfp4(
    x: torch.Tensor,
    tile: tuple[int, int] = (1, 16),
    amax: torch.Tensor | None = None,
    rounding: str = "rne",
    generator: torch.Generator | None = None,
) -> Quantized:
    """NVFP4: E2M1 elements, an E4M3 scale per `tile` (1x16 or 16x16), an FP32 tensor scale (lowprec §3.4).

    `amax` overrides the tensor amax (the RHT path passes the post-transform amax). Blocks whose E4M3 scale
    underflows to 0 are flushed: codes saturate to ±6 but dequantize to 0, as in TE.
    """
    tile = tuple(tile)
    if tile not in NVFP4_TILES:
        raise ValueError(f"NVFP4 tile must be one of {NVFP4_TILES}, got {tile}")
    x2 = _as_padded_2d(x, tile)
    amax_b = _block_amax(x2, tile)
    finite_b = torch.isfinite(amax_b)
    if amax is None:
        amax = torch.where(finite_b, amax_b, 0.0).amax() if amax_b.numel() else torch.zeros(())
    s_enc = nvfp4_global_encode_scale(amax)
    s_dec = 1.0 / s_enc
    mult = s_enc * torch.tensor(1.0 / 6.0, dtype=torch.float32)  # one fp32 product, reused (TE order)
    s_b = (amax_b * mult).clamp(max=E4M3.max).to(torch.float8_e4m3fn).to(torch.float32)  # clamp, then RNE
    enc_b = (1.0 / (s_b * s_dec)).clamp(max=FP32_MAX)  # s_b == 0 -> inf -> FLT_MAX
    q = round_to_format(_times_blocks(x2, enc_b, tile), E2M1, rounding, generator)
    s_b = torch.where(finite_b, s_b, torch.full_like(s_b, float("nan")))
    return Quantized("nvfp4", q, s_b, s_dec, tile, x.shape)


# ------------------------------------------------------------------------------------------- public API
FORMATS = ("e4m3", "e5m2", "mxfp8", "mxfp4", "nvfp4", "bf16", "none")


def quantize(
    x: torch.Tensor,
    fmt: str,
    block: int | tuple[int, int] | None = None,
    rounding: str = "rne",
    generator: torch.Generator | None = None,
    amax: torch.Tensor | None = None,
    mx_scale: str = "floor",
) -> Quantized:
    """Quantize `x` to a scaled low-precision format; see `fake_quantize` for the arguments."""
    if fmt in ("e4m3", "e5m2"):
        if block not in (None, 0):
            raise ValueError(f"{fmt} is per-tensor scaled here; block must be None, got {block!r}")
        return quantize_fp8(x, fmt, amax=amax, rounding=rounding, generator=generator)
    if fmt in MX_ELEMENTS:
        size = 32 if block is None else (block[-1] if isinstance(block, tuple) else block)
        if isinstance(block, tuple) and block[0] != 1:
            raise ValueError(f"MX blocks are 1-D (1, n), got {block}")
        if amax is not None:
            raise ValueError("MX formats have no tensor scale; amax must be None")
        return quantize_mx(x, fmt, size, scale_mode=mx_scale, rounding=rounding, generator=generator)
    if fmt == "nvfp4":
        tile = (1, 16) if block is None else ((1, block) if isinstance(block, int) else tuple(block))
        return quantize_nvfp4(x, tile, amax=amax, rounding=rounding, generator=generator)
    raise ValueError(f"unknown quantized format {fmt!r}; expected one of {FORMATS[:-2]}")


def fake_quantize(
    x: torch.Tensor,
    fmt: str,
    block: int | tuple[int, int] | None = None,
    rounding: str = "rne",
    generator: torch.Generator | None = None,
    amax: torch.Tensor | None = None,
    mx_scale: str = "floor",
) -> torch.Tensor:
    """Quantize then dequantize `x` exactly as the format does; returns float32 of x's shape.

    fmt: "e4m3" / "e5m2" (per-tensor current scaling, or a given `amax`, e.g. from an AmaxHistory),
         "mxfp8" / "mxfp4" (block 32 by default, `mx_scale` "floor" (OCP) or "ceil" (TE)),
         "nvfp4" (block (1, 16) by default or (16, 16); `amax` overrides the tensor amax),
         "bf16" (round to bfloat16), "none" (identity, returns x unchanged).
    rounding: "rne" (round to nearest, ties to even) or "sr" (stochastic; draws from `generator`).
    """
    if fmt == "none":
        return x
    if fmt == "bf16":
        return x.to(torch.bfloat16).to(torch.float32)
    return quantize(x, fmt, block, rounding, generator, amax, mx_scale).dequantize()
