"""Apply a precision recipe to a model from outside: swap block Linears for QuantLinear, switch them later.

The model never mentions precision. `convert` walks the model's block list (`backbone.layers`, or
`layers`), skips the first `keep_first` and last `keep_last` blocks (or, when the recipe's
`high_precision` is bf16, gives their Linears the bf16 recipe), and replaces every plain nn.Linear
inside the remaining blocks (except names matching `recipe.skip_modules`, e.g. the MoE router) by a
QuantLinear sharing the same parameters. Everything else (embeddings, norms, Mamba conv1d / A_log / D /
dt_bias, MoE 3-D expert tensors, the LM head outside the blocks) is left in high precision.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from hytron.lowp.linear import QuantLinear
from hytron.lowp.recipe import PrecisionRecipe


def find_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of blocks: `model.backbone.layers` (HybridLM), else `model.layers`, else None."""
    for path in ("backbone.layers", "layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, (nn.ModuleList, nn.Sequential)):
            return obj
    return None


def convert(model: nn.Module, recipe: PrecisionRecipe | str) -> nn.Module:
    """Swap the quantizable Linears of `model` (in place) for QuantLinears following `recipe`; returns model.

    A full-precision recipe ("fp32") changes nothing. Parameters are shared, not copied, so convert may run
    before or after the optimizer is built, and checkpoints keep the same keys.
    """
    if isinstance(recipe, str):
        recipe = PrecisionRecipe.from_name(recipe)
    if any(isinstance(m, QuantLinear) for m in model.modules()):
        raise ValueError("convert: model already has QuantLinear modules; convert a fresh model")
    if recipe.full_precision:
        return model
    blocks = find_blocks(model)
    if blocks is None:
        raise ValueError("convert: found no block list (model.backbone.layers or model.layers); precision "
                         "is applied per block so the first/last blocks can stay high precision")
    n = len(blocks)
    if recipe.keep_first + recipe.keep_last >= n:
        raise ValueError(f"convert: recipe {recipe.name!r} keeps {recipe.keep_first} first + "
                         f"{recipe.keep_last} last blocks in high precision, but the model has {n} blocks")
    count = 0
    kept = None  # the kept blocks' recipe: none (fp32 nn.Linear) or bf16 operands, as the recipe asks
    if recipe.high_precision == "bf16":
        kept = PrecisionRecipe.from_name("bf16", seed=recipe.seed, high_precision="bf16")
    for i in range(n):
        block_recipe = recipe if recipe.keep_first <= i < n - recipe.keep_last else kept
        if block_recipe is None:
            continue
        for name, module in list(blocks[i].named_modules()):
            if type(module) is not nn.Linear or any(s in name for s in recipe.skip_modules):
                continue
            quant = QuantLinear.from_linear(module, block_recipe, layer_index=count)
            if name == "":  # the block itself is a Linear
                blocks[i] = quant
            else:
                parent_name, _, attr = name.rpartition(".")
                setattr(blocks[i].get_submodule(parent_name) if parent_name else blocks[i], attr, quant)
            count += 1
    if count == sum(1 for _, m in quant_linears(model) if m.recipe is kept):
        raise ValueError(f"convert: recipe {recipe.name!r} found no nn.Linear to quantize in blocks "
                         f"{recipe.keep_first}..{n - recipe.keep_last - 1}")
    return model


def quant_linears(model: nn.Module) -> Iterator[tuple[str, QuantLinear]]:
    """(qualified name, module) for every QuantLinear in the model."""
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            yield name, module


def set_high_precision(model: nn.Module, enabled: bool = True, passes: str = "forward") -> int:
    """Run converted layers' GEMMs in high precision ("forward" or "all" passes), or back to the recipe.

    The paper's late switch (App. D): forward-only BF16 for the last ~18% of tokens recovers most of the
    loss gap. Returns how many layers were switched.
    """
    if passes not in ("forward", "all"):
        raise ValueError(f"set_high_precision: passes must be 'forward' or 'all', got {passes!r}")
    layers = [m for _, m in quant_linears(model)]
    for m in layers:
        m.hp_forward = enabled
        m.hp_backward = enabled and passes == "all"
    return len(layers)


def precision_summary(model: nn.Module) -> dict[str, int]:
    """How many Linear modules run quantized vs in high precision (forward), for logs and tests."""
    quant = sum(1 for _, m in quant_linears(model) if not m.hp_forward)
    linear = sum(1 for m in model.modules() if isinstance(m, nn.Linear))
    return {"quantized": quant, "high_precision": linear - quant}


def precision_state(model: nn.Module) -> dict[str, dict]:
    """Per-layer state outside state_dict() (SR generators, amax histories, high-precision switch), by name.

    Save it with a checkpoint and give it back to `load_precision_state` to resume bit-exactly.
    """
    return {name: m.precision_state() for name, m in quant_linears(model)}


def load_precision_state(model: nn.Module, state: dict[str, dict]) -> None:
    """Restore what `precision_state` saved into a model converted with the same recipe.

    Only layers with state of their own must match: a kept block is plain fp32 Linears when the recipe's
    `high_precision` is fp32 (a GPU run, or a checkpoint from before kept blocks were bf16 QuantLinears on a
    CPU) and bf16 QuantLinears otherwise, and neither holds anything to restore (no stochastic rounding, no amax
    history; the loop sets the switch flags again every step), so a checkpoint of one resumes into the other.
    """
    layers = dict(quant_linears(model))
    missing = sorted(n for n in set(layers) - set(state) if not _stateless_layer(layers[n]))
    extra = sorted(n for n in set(state) - set(layers) if state[n]["generators"] or state[n]["amax"])
    if missing or extra:
        raise ValueError(f"precision state does not match the model's quantized layers: missing "
                         f"{missing[:3]}, unexpected {extra[:3]} (same recipe?)")
    for name, layer in layers.items():
        if name in state:
            layer.load_precision_state(state[name])


def _stateless_layer(layer: QuantLinear) -> bool:
    """A layer whose recipe draws no stochastic rounding and keeps no amax history (e.g. bf16 operands)."""
    specs = (layer.recipe.weight, layer.recipe.activation, layer.recipe.gradient)
    return all(s.rounding != "sr" and s.scaling != "delayed" for s in specs)
