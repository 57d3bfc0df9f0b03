"""The pieces every training loop shares (pre-training, SFT, RL): optimizer, LR, stop signals, save/resume, export.

Loops stay readable top to bottom and call these; there is no Trainer class to subclass.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

import torch

from hytron.model import HybridLM
from hytron.train import checkpoint as ckpt
from hytron.train import distributed as dist
from hytron.train.recipe import OptimSpec
from hytron.train.schedule import lr_at


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the current step and exits cleanly."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: signals stay with the caller
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


def make_optimizer(model: HybridLM, o: OptimSpec) -> torch.optim.AdamW:
    """AdamW over the model's parameter groups (no weight decay on norms, biases, A_log, D, dt_bias)."""
    return torch.optim.AdamW(model.param_groups(o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)


def set_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, o: OptimSpec) -> float:
    lr = lr_at(step, base_lr=o.lr, total_steps=total_steps, warmup_steps=o.warmup_steps, schedule=o.schedule,
               min_lr_ratio=o.min_lr_ratio, decay_fraction=o.decay_fraction)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> float:
    """Clip the global gradient norm (0 disables), step, zero the gradients; returns the pre-clip norm."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else torch.zeros(())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def resume(ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           loader=None) -> tuple[int, dict[str, Any]]:
    """Load the newest valid checkpoint into model, optimizer, RNG, the data loader's position and the
    low-precision layers' own state (stochastic-rounding generators, amax histories, switches).

    Returns (step, the checkpoint's JSON state); (0, {}) when the run has no checkpoint yet."""
    found = ckpt.load_latest(ckpt_dir)
    if found is None:
        return 0, {}
    path, tensors, state = found
    optim_sd = ckpt.unflatten_optimizer_state(tensors.get("optimizer", {}), state["optimizer"])
    dist.load_full_state(model, optimizer, tensors["model"], optim_sd)
    if loader is not None:
        loader.load_state_dict(state["loader"])
    ckpt.set_rng_state(tensors["rng"], state["rng"])
    if state.get("precision") is not None:
        from hytron.lowp.convert import load_precision_state

        load_precision_state(model, ckpt.join_tensors(state["precision"], tensors.get("precision", {})))
    if dist.rank() == 0:
        print(f"resumed from {path} at step {state['step']}")
    return int(state["step"]), state


def save_checkpoint(ckpt_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep: int) -> dict:
    """Write a checkpoint of model, optimizer, RNG and low-precision layer state plus JSON `state`
    (collective under FSDP: call on every rank; rank 0 writes). Returns the full model state dict."""
    model_sd, optim_sd = dist.full_state(model, optimizer)
    if dist.rank() == 0:
        opt_tensors, opt_meta = ckpt.flatten_optimizer_state(optim_sd)
        rng_tensors, rng_meta = ckpt.rng_state()
        groups = {"model": model_sd, "optimizer": opt_tensors, "rng": rng_tensors}
        precision = None
        if any(type(m).__name__ == "QuantLinear" for m in model.modules()):
            from hytron.lowp.convert import precision_state

            groups["precision"], precision = ckpt.split_tensors(precision_state(model))
        ckpt.write_checkpoint(ckpt_dir, step, groups,
                              {**state, "optimizer": opt_meta, "rng": rng_meta, "precision": precision}, keep=keep)
    dist.barrier()
    return model_sd


def export_model(config, state: dict, tokenizer, path: Path) -> Path:
    """Write trained weights as a Nemotron-H directory with `tokenizer` (may be None).

    `state` is a full (unsharded) state dict. Quantized layers (a lowp recipe) keep their master weights under
    the plain names; only the tensors a plain `HybridLM` has are exported, so the directory loads anywhere.
    """
    with torch.device("meta"):
        plain = HybridLM(config)
    plain.load_state_dict({k: state[k].detach().cpu() for k in plain.state_dict()}, assign=True)
    return plain.save_pretrained(path, tokenizer=tokenizer)
