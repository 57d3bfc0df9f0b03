"""The setup every training stage shares: process group and run folder, model (preset or directory), precision,
compilation, the distributed wrap, and the tokenizer. Stages call these functions; none imports another stage."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hytron.config import ConfigError, save_resolved
from hytron.model import HybridConfig, HybridLM
from hytron.train import distributed as dist


def start(cfg) -> dist.DistInfo:
    """Join the process group (torchrun) or run alone, set CPU threads, create `out_dir` and save the resolved
    config into it (rank 0)."""
    info = dist.setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if info.is_main:
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, Path(cfg.out_dir) / "config.json")
    return info


def build_model(cfg, vocab_size: int, trains_mtp: bool = False) -> HybridLM:
    """A fresh model from a preset (seeded init) or an existing Nemotron-H directory (`model.init_from`), with an
    MTP head added (seeded) when `model.mtp.depths` asks for one and the model has none. A stage whose loop has
    no MTP loss (`trains_mtp` False) refuses `model.mtp.depths` rather than ignore it."""
    if cfg.model.mtp.depths and not trains_mtp:
        raise ConfigError(f"model.mtp.depths={cfg.model.mtp.depths}: this stage does not train an MTP head yet "
                          "(pre-training and SFT do); set model.mtp.depths=0")
    if cfg.model.init_from:
        model = HybridLM.from_pretrained(cfg.model.init_from)
        if model.config.vocab_size < vocab_size:
            raise ValueError(f"model.init_from {cfg.model.init_from} has vocab_size {model.config.vocab_size} but "
                             f"the data's tokenizer has {vocab_size} ids; use data tokenized with its tokenizer")
    else:
        overrides = {"vocab_size": vocab_size, **cfg.model.overrides}
        torch.manual_seed(cfg.seed)
        model = HybridLM(HybridConfig.from_name(cfg.model.preset, **overrides))
    mtp = cfg.model.mtp
    if mtp.depths and model.mtp is None:
        pattern = mtp.pattern or ("*E" if "E" in model.config.pattern else "*-")
        model.add_mtp(pattern, generator=torch.Generator().manual_seed(cfg.seed))
    elif mtp.depths and mtp.pattern and mtp.pattern != model.config.mtp_pattern:
        raise ConfigError(f"model.mtp.pattern: {mtp.pattern!r}, but the model's MTP head is "
                          f"{model.config.mtp_pattern!r}; leave the pattern empty to train the head it has")
    return model


def apply_precision(model: HybridLM, precision: str, device: torch.device | None = None,
                    decay_fraction: float = 0.2, total_steps: int | None = None):
    """Swap the model's Linears for quantized ones when `precision` names a hytron.lowp recipe (returned).

    Names: "auto"/"fp32" (nothing), "bf16", any `hytron.lowp` recipe, and "RECIPE+switch" (the paper's late
    switch of the forward GEMMs to high precision when the WSD decay starts, App. D: given `total_steps`, at
    exactly the step where `lr_at`'s decay starts; without it, after 1 - `decay_fraction` of the run). On a GPU,
    bf16 is autocast and a low-precision recipe's kept blocks run under the same autocast. On a CPU, bf16
    autocast is neither fast nor what a GPU computes, so bf16 is emulated instead: GEMM operands rounded to bf16
    with fp32 accumulation (a tensor core's arithmetic), for "bf16" itself and for the kept blocks and switched
    passes of a low-precision recipe, so that "nvfp4" and "bf16" differ only where the recipe quantizes.
    """
    from hytron.lowp import RECIPE_NAMES, PrecisionRecipe, convert

    device = device or torch.device("cpu")
    base, switch = precision.removesuffix("+switch"), precision.endswith("+switch")
    if base not in ("auto", *RECIPE_NAMES):
        raise ConfigError(f"precision: unknown {precision!r}; known: auto, {', '.join(RECIPE_NAMES)}, and each "
                          "low-precision recipe as RECIPE+switch")
    if switch and base in ("auto", "fp32", "bf16"):  # on every device: there is nothing lower to switch from
        raise ConfigError(f"precision: {precision!r}: +switch applies to a low-precision recipe (e.g. nvfp4+switch)")
    if base in ("auto", "fp32") or (base == "bf16" and device.type == "cuda"):
        return None
    overrides = {"high_precision": "bf16"} if device.type != "cuda" else {}
    if switch:
        from hytron.train.schedule import decay_start

        overrides["high_precision_from"] = (decay_start(total_steps, decay_fraction) / total_steps if total_steps
                                            else 1 - decay_fraction)
    recipe = PrecisionRecipe.from_name(base, **overrides)
    convert(model, recipe)
    return recipe


def switch_precision(model: HybridLM, recipe, step: int, total_steps: int) -> None:
    """The recipe's late switch of its last passes to high precision, once `step` reaches it."""
    if recipe is not None and recipe.should_switch(step, total_steps):
        from hytron.lowp import set_high_precision

        set_high_precision(model, True, passes=recipe.high_precision_passes)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on a GPU for every precision but fp32; none on a CPU (bf16 is emulated there)."""
    if precision == "fp32" or device.type != "cuda":
        return None
    return torch.bfloat16


def prepare_model(cfg, vocab_size: int, info: dist.DistInfo,
                  trains_mtp: bool = False) -> tuple[HybridLM, nn.Module, object, torch.dtype | None]:
    """(model, the module the loop calls, lowp recipe or None, autocast dtype or None): built, converted to
    `cfg.precision`, compiled per block when `cfg.compile`, wrapped for `cfg.distributed`. The MTP head is not
    converted: `convert` walks `backbone.layers` only, so it stays in high precision (Megatron's
    `keep_mtp_spec_in_bf16`)."""
    model = build_model(cfg, vocab_size, trains_mtp).to(info.device)
    recipe = apply_precision(model, cfg.precision, info.device, getattr(cfg.optim, "decay_fraction", 0.2),
                             total_steps=cfg.steps)
    return model, place_model(model, cfg, info), recipe, autocast_dtype(cfg.precision, info.device)


def place_model(model: nn.Module, cfg, info: dist.DistInfo) -> nn.Module:
    """The module the loop calls for a model that exists already (built, loaded, given LoRA adapters): moved to
    the run's device, compiled per block when `cfg.compile`, wrapped for `cfg.distributed`."""
    model.to(info.device)
    if cfg.compile:
        from hytron.model.kernels import compile_blocks

        compile_blocks(model)
    return dist.wrap(model, cfg.distributed, info)


def load_tokenizer(cfg):
    """The run's tokenizer: `cfg.tokenizer`, else the one that travels with `model.init_from`."""
    from hytron.tokenizer import Tokenizer

    where = cfg.tokenizer or cfg.model.init_from
    if not where:
        raise ConfigError("tokenizer: set it to a tokenizer directory (or set model.init_from to a model with one)")
    return Tokenizer.load(where)
