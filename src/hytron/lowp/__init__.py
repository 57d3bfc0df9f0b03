"""Low-precision training: exact FP8/MX/NVFP4 quantize-dequantize; recipes applied to a model from outside.

    from hytron.lowp import PrecisionRecipe, convert, fake_quantize, set_high_precision
    model = convert(model, PrecisionRecipe.from_name("nvfp4"))   # swaps block Linears for QuantLinear
    ...
    if recipe.should_switch(step, total_steps):                  # optional late switch (paper App. D)
        set_high_precision(model, True, passes=recipe.high_precision_passes)

Quantized weights are cached per weight version, so the training loop needs no per-step hook. For a
bit-exact resume, checkpoint `precision_state(model)` and restore it with `load_precision_state`.
"""

from hytron.lowp.convert import (
    convert,
    find_blocks,
    load_precision_state,
    precision_state,
    precision_summary,
    quant_linears,
    set_high_precision,
)
from hytron.lowp.formats import E2M1, E4M3, E5M2, ElementFormat, pack_fp4, round_to_format
from hytron.lowp.hadamard import hadamard, rht, rht_matrix
from hytron.lowp.linear import QuantLinear
from hytron.lowp.quantize import AmaxHistory, Quantized, fake_quantize, quantize
from hytron.lowp.recipe import RECIPE_NAMES, PrecisionRecipe, QuantSpec

__all__ = [
    "E2M1", "E4M3", "E5M2", "RECIPE_NAMES", "AmaxHistory", "ElementFormat", "PrecisionRecipe", "QuantLinear",
    "QuantSpec", "Quantized", "convert", "fake_quantize", "find_blocks", "hadamard", "load_precision_state",
    "pack_fp4", "precision_state", "precision_summary", "quant_linears", "quantize", "rht", "rht_matrix",
    "round_to_format", "set_high_precision",
]
