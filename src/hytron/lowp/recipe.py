"""Precision recipes by name: how each GEMM operand of a converted Linear is quantized; what stays high.

A `PrecisionRecipe` is data only (it names formats; `QuantLinear` acts on it). Recipes follow the NVFP4
pre-training paper (arXiv 2509.25149) and Transformer Engine's defaults (lowprec.md §1.3, §3.6, §4):
- nvfp4: weights 16x16 blocks RNE (one quantized W for forward and backward), activations 1x16 RNE,
  gradients 1x16 stochastic rounding, a 16x16 RHT on both weight-gradient operands, the last block(s)
  kept in high precision. Ablations each drop one ingredient.
- fp8: TE's HYBRID current scaling: E4M3 weights and activations, E5M2 gradients, one FP32 scale per tensor.
- mxfp8 / mxfp4: OCP MX 1x32 blocks with E8M0 scales rounded up as TE/the paper do; mxfp4 reuses the
  NVFP4 recipe's SR-on-gradients and a 32-point RHT (the paper's MXFP4 comparison runs).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from hytron.config import ConfigError, from_dict
from hytron.lowp.quantize import MX_ELEMENTS, MX_SCALE_MODES, NVFP4_TILES

Fmt = Literal["none", "bf16", "e4m3", "e5m2", "mxfp8", "mxfp4", "nvfp4"]


@dataclass(frozen=True)
class QuantSpec:
    """How one GEMM operand (weight, activation or gradient) is quantized along its contraction dim."""

    fmt: Fmt = "none"
    block: tuple[int, int] | None = None  # nvfp4 (1,16)/(16,16); MX (1,32); per-tensor formats: None
    rounding: Literal["rne", "sr"] = "rne"
    scaling: Literal["current", "delayed"] = "current"  # per-tensor FP8 only
    amax_history: int = 1024  # delayed scaling window (TE default)
    mx_scale: Literal["floor", "ceil"] = "ceil"

    def __post_init__(self):
        where = f"QuantSpec(fmt={self.fmt!r})"
        if self.fmt not in ("none", "bf16", "e4m3", "e5m2", "mxfp8", "mxfp4", "nvfp4"):
            raise ConfigError(f"{where}.fmt: unknown format {self.fmt!r}")
        if self.block is not None:
            object.__setattr__(self, "block", tuple(self.block))
        if self.fmt == "nvfp4" and self.block not in NVFP4_TILES:
            raise ConfigError(f"{where}.block: NVFP4 needs one of {NVFP4_TILES}, got {self.block}")
        if self.fmt in MX_ELEMENTS and (self.block is None or self.block[0] != 1 or self.block[1] < 1):
            raise ConfigError(f"{where}.block: MX blocks are (1, n), e.g. (1, 32); got {self.block}")
        if self.fmt in ("none", "bf16", "e4m3", "e5m2") and self.block is not None:
            raise ConfigError(f"{where}.block: {self.fmt} has no blocks here; got {self.block}")
        if self.rounding not in ("rne", "sr"):
            raise ConfigError(f"{where}.rounding: must be 'rne' or 'sr', got {self.rounding!r}")
        if self.rounding == "sr" and self.fmt in ("none", "bf16"):
            raise ConfigError(f"{where}.rounding: stochastic rounding needs a quantized format")
        if self.scaling not in ("current", "delayed"):
            raise ConfigError(f"{where}.scaling: must be 'current' or 'delayed', got {self.scaling!r}")
        if self.scaling == "delayed" and self.fmt not in ("e4m3", "e5m2"):
            raise ConfigError(f"{where}.scaling: delayed scaling is per-tensor FP8 (e4m3/e5m2) only")
        if self.amax_history < 1:
            raise ConfigError(f"{where}.amax_history: must be >= 1, got {self.amax_history}")
        if self.mx_scale not in MX_SCALE_MODES:
            raise ConfigError(f"{where}.mx_scale: must be one of {MX_SCALE_MODES}, got {self.mx_scale!r}")

    @property
    def identity(self) -> bool:
        return self.fmt == "none"


@dataclass(frozen=True)
class PrecisionRecipe:
    """Operand formats for the three GEMMs of every converted Linear, plus where quantization is skipped.

    Forward y = x Wᵀ uses (activation, weight); input-grad dx = dy W uses (gradient, weight); weight-grad
    dW = dyᵀ x uses (gradient, activation) quantized along the token dim, after the RHT if `wgrad_rht`.
    `keep_first` / `keep_last` blocks of `backbone.layers` stay in high precision (`high_precision`: fp32,
    or bf16 operands), as do Linear modules whose qualified name contains any of `skip_modules` (always fp32)
    and every Linear outside the blocks (LM head, fp32).
    `high_precision_from` in (0, 1]: fraction of training after which the loop should call
    `set_high_precision(model, True, passes=high_precision_passes)` (paper App. D: forward only, at the
    onset of LR decay); None never switches.
    """

    name: str = "custom"
    weight: QuantSpec = field(default_factory=QuantSpec)
    activation: QuantSpec = field(default_factory=QuantSpec)
    gradient: QuantSpec = field(default_factory=QuantSpec)
    wgrad_rht: bool = False
    rht_size: int = 16
    rht_seed: int | None = None  # None: TE's fixed sign vector (16 only); an int draws signs from that seed
    keep_first: int = 0
    keep_last: int = 0
    skip_modules: tuple[str, ...] = ("router",)
    high_precision_from: float | None = None
    high_precision_passes: Literal["forward", "all"] = "forward"
    # what "high precision" computes: fp32 (nn.Linear as is), or bf16 operands with fp32 accumulation (what a
    # GPU's bf16 GEMM does; the paper keeps its last blocks and the switched passes in BF16). On a CPU the
    # training setup asks for bf16 so that a recipe differs from the bf16 baseline only where it quantizes.
    high_precision: Literal["fp32", "bf16"] = "fp32"
    native_fp8: bool = True  # use torch._scaled_mm for per-tensor FP8 GEMMs on CUDA GPUs that support it
    seed: int = 0  # stochastic-rounding streams: layer i draws from a generator seeded (seed, i)

    def __post_init__(self):
        for role in ("weight", "activation", "gradient"):
            spec = getattr(self, role)
            if isinstance(spec, dict):
                object.__setattr__(self, role, from_dict(QuantSpec, spec, f"PrecisionRecipe.{role}"))
            elif not isinstance(spec, QuantSpec):
                raise ConfigError(f"PrecisionRecipe.{role}: expected a QuantSpec, got {type(spec).__name__}")
        object.__setattr__(self, "skip_modules", tuple(self.skip_modules))
        if self.rht_size < 2 or self.rht_size & (self.rht_size - 1):
            raise ConfigError(f"PrecisionRecipe.rht_size: must be a power of two >= 2, got {self.rht_size}")
        if self.rht_seed is None and self.rht_size != 16:
            raise ConfigError("PrecisionRecipe.rht_seed: TE's fixed signs are 16 long; set a seed for size "
                              f"{self.rht_size}")
        if self.wgrad_rht and (self.activation.identity or self.gradient.identity):
            raise ConfigError("PrecisionRecipe.wgrad_rht: the RHT only makes sense with quantized "
                              "activations and gradients")
        for name in ("keep_first", "keep_last"):
            if getattr(self, name) < 0:
                raise ConfigError(f"PrecisionRecipe.{name}: must be >= 0, got {getattr(self, name)}")
        if self.high_precision_from is not None and not 0 < self.high_precision_from <= 1:
            raise ConfigError("PrecisionRecipe.high_precision_from: a fraction of training in (0, 1], got "
                              f"{self.high_precision_from}")
        if self.high_precision_passes not in ("forward", "all"):
            raise ConfigError("PrecisionRecipe.high_precision_passes: 'forward' or 'all', got "
                              f"{self.high_precision_passes!r}")
        if self.high_precision not in ("fp32", "bf16"):
            raise ConfigError(f"PrecisionRecipe.high_precision: 'fp32' or 'bf16', got {self.high_precision!r}")
        if self.weight.rounding == "sr":
            raise ConfigError("PrecisionRecipe.weight.rounding: weights use RNE (one weight for fwd and bwd; "
                              "SR on weights diverges, paper E.3)")

    @property
    def full_precision(self) -> bool:
        """True when no operand is touched: `convert` leaves the model as it is."""
        return self.weight.identity and self.activation.identity and self.gradient.identity

    def should_switch(self, step: int, total_steps: int) -> bool:
        """True once `step` (0-based) has reached the high-precision switch point of a `total_steps` run: the
        first step that starts after `high_precision_from` of the run (step >= from * total_steps; a fraction
        computed as k / total_steps switches exactly at step k, whatever its float rounding)."""
        if self.high_precision_from is None:
            return False
        return step >= math.ceil(self.high_precision_from * total_steps - 1e-9)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> PrecisionRecipe:
        """A named recipe (see `RECIPE_NAMES`), with optional field overrides (e.g. keep_last=2)."""
        if name not in _RECIPES:
            raise ConfigError(f"unknown precision recipe {name!r}; known: {', '.join(RECIPE_NAMES)}")
        recipe = _RECIPES[name]
        return dataclasses.replace(recipe, **overrides) if overrides else recipe

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecisionRecipe:
        """From a mapping (YAML): {"recipe": name, ...overrides} or every field spelled out."""
        data = dict(data)
        base = data.pop("recipe", None)
        if base is None:
            return from_dict(cls, data, "PrecisionRecipe")
        checked = from_dict(cls, {"name": base, **data}, "PrecisionRecipe")  # type-check the overrides
        return cls.from_name(base, **{k: getattr(checked, k) for k in data})


def _nvfp4(name: str, **changes: Any) -> PrecisionRecipe:
    base = PrecisionRecipe(
        name=name,
        weight=QuantSpec("nvfp4", (16, 16)),
        activation=QuantSpec("nvfp4", (1, 16)),
        gradient=QuantSpec("nvfp4", (1, 16), rounding="sr"),
        wgrad_rht=True,
        keep_last=1,  # paper: last blocks in BF16 (last 4 of 20 at 1.2B); one block at hytron-tiny depth
    )
    return dataclasses.replace(base, **changes)


_RECIPES: dict[str, PrecisionRecipe] = {
    r.name: r
    for r in (
        PrecisionRecipe(name="fp32"),
        PrecisionRecipe(name="bf16", weight=QuantSpec("bf16"), activation=QuantSpec("bf16"),
                        gradient=QuantSpec("bf16")),
        PrecisionRecipe(name="fp8", weight=QuantSpec("e4m3"), activation=QuantSpec("e4m3"),
                        gradient=QuantSpec("e5m2")),
        PrecisionRecipe(name="fp8-delayed", weight=QuantSpec("e4m3", scaling="delayed"),
                        activation=QuantSpec("e4m3", scaling="delayed"),
                        gradient=QuantSpec("e5m2", scaling="delayed")),
        PrecisionRecipe(name="mxfp8", weight=QuantSpec("mxfp8", (1, 32)),
                        activation=QuantSpec("mxfp8", (1, 32)), gradient=QuantSpec("mxfp8", (1, 32))),
        _nvfp4("mxfp4", weight=QuantSpec("mxfp4", (1, 32)), activation=QuantSpec("mxfp4", (1, 32)),
               gradient=QuantSpec("mxfp4", (1, 32), rounding="sr"), rht_size=32, rht_seed=0),
        _nvfp4("nvfp4"),
        _nvfp4("nvfp4-no-rht", wgrad_rht=False),
        _nvfp4("nvfp4-no-sr", gradient=QuantSpec("nvfp4", (1, 16))),
        _nvfp4("nvfp4-1d-weights", weight=QuantSpec("nvfp4", (1, 16))),
        _nvfp4("nvfp4-all-layers", keep_last=0),
    )
}
RECIPE_NAMES = tuple(_RECIPES)
