"""The setup every training stage shares: process group and run folder, model (preset or directory), precision,
compilation, the distributed wrap, and the tokenizer. Stages call these functions; none imports another stage."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hytron.config import ConfigError, save_resolved
from hytron.model import HybridConfig, HybridLM
from hytron.train import distributed as dist

LOWP_RECIPES_EXCLUDED = ("auto", "fp32", "bf16")


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


def build_model(cfg, vocab_size: int) -> HybridLM:
    """A fresh model from a preset (seeded init) or an existing Nemotron-H directory (`model.init_from`)."""
    if cfg.model.init_from:
        model = HybridLM.from_pretrained(cfg.model.init_from)
        if model.config.vocab_size < vocab_size:
            raise ValueError(f"model.init_from {cfg.model.init_from} has vocab_size {model.config.vocab_size} but "
                             f"the data's tokenizer has {vocab_size} ids; use data tokenized with its tokenizer")
        return model
    overrides = {"vocab_size": vocab_size, **cfg.model.overrides}
    torch.manual_seed(cfg.seed)
    return HybridLM(HybridConfig.from_name(cfg.model.preset, **overrides))


def apply_precision(model: HybridLM, precision: str):
    """Swap the model's Linears for quantized ones when `precision` names a hytron.lowp recipe (returned)."""
    if precision in LOWP_RECIPES_EXCLUDED:
        return None
    from hytron.lowp import PrecisionRecipe, convert

    recipe = PrecisionRecipe.from_name(precision)
    convert(model, recipe)
    return recipe


def switch_precision(model: HybridLM, recipe, step: int, total_steps: int) -> None:
    """The recipe's late switch of its last passes to high precision, once `step` reaches it."""
    if recipe is not None and recipe.should_switch(step, total_steps):
        from hytron.lowp import set_high_precision

        set_high_precision(model, True, passes=recipe.high_precision_passes)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return None


def prepare_model(cfg, vocab_size: int, info: dist.DistInfo) -> tuple[HybridLM, nn.Module, object, torch.dtype | None]:
    """(model, the module the loop calls, lowp recipe or None, autocast dtype or None): built, converted to
    `cfg.precision`, compiled per block when `cfg.compile`, wrapped for `cfg.distributed`."""
    model = build_model(cfg, vocab_size).to(info.device)
    recipe = apply_precision(model, cfg.precision)
    if cfg.compile:
        from hytron.model.kernels import compile_blocks

        compile_blocks(model)
    return model, dist.wrap(model, cfg.distributed, info), recipe, autocast_dtype(cfg.precision, info.device)


def load_tokenizer(cfg):
    """The run's tokenizer: `cfg.tokenizer`, else the one that travels with `model.init_from`."""
    from hytron.tokenizer import Tokenizer

    where = cfg.tokenizer or cfg.model.init_from
    if not where:
        raise ConfigError("tokenizer: set it to a tokenizer directory (or set model.init_from to a model with one)")
    return Tokenizer.load(where)
