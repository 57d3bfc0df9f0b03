"""Activation-based importance of hidden channels, MLP neurons, Mamba heads and whole blocks (Minitron).

Minitron (Muralidharan et al., arXiv 2407.14679) ranks width by the activations a small calibration set
produces: embedding channels by the LayerNorm outputs, MLP neurons by their activations, heads by their
outputs; aggregated over tokens and sequences. Here, for every activation a (batch, seq, channels):
score = ‖ mean_seq |a| ‖₂ over the batch, accumulated over calibration batches.

- hidden channel: the outputs of every block's pre-norm and of the final norm (the only places where the
  residual stream is read), summed over those norms;
- MLP neuron: relu²(up(x)), the input of down_proj;
- Mamba head: the size of the head's output, out_proj applied to its P channels of the gated-normed SSD
  output (like an attention head's output); heads are then ranked within each B/C group (group-aware SSM
  pruning, Taghibakhshi et al., arXiv 2504.11409);
- block (depth): how much the calibration loss rises when that block alone is skipped (Minitron's
  LM-loss criterion for depth).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hytron.model.hybrid import RMSNorm

Calib = Sequence[tuple[Tensor, Tensor]]  # (inputs (B, L), targets (B, L)) batches


@dataclass
class Importance:
    hidden: Tensor  # (d,)
    mlp: dict[int, Tensor] = field(default_factory=dict)  # layer index -> (intermediate_size,)
    mamba_heads: dict[int, Tensor] = field(default_factory=dict)  # layer index -> (mamba_num_heads,)
    layers: Tensor | None = None  # (num_layers,) loss increase when the block is skipped
    base_loss: float = float("nan")
    # norm module name -> (channels,) mean square of the norm's input per channel: pruning channels changes
    # an RMS norm's denominator, and these let `prune_model` rescale the kept weights to compensate
    norm_energy: dict[str, Tensor] = field(default_factory=dict)


class _Skip(nn.Module):
    """Stands in for a block: passes the residual stream through unchanged."""

    def forward(self, h: Tensor, *args, **kwargs) -> Tensor:
        return h


@torch.no_grad()
def calibration_loss(model: nn.Module, calib: Calib) -> float:
    """Mean next-token cross-entropy over the calibration batches."""
    total, count = 0.0, 0
    for x, y in calib:
        logits = model(x)
        total += float(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum"))
        count += y.numel()
    return total / max(1, count)


def _aggregate(a: Tensor) -> Tensor:
    """(b, L, c) activations -> (c,) per-channel sum over the batch of (mean over seq of |a|)²."""
    return a.detach().float().abs().mean(1).pow(2).sum(0)


def _head_outputs(out_proj: nn.Linear, a: Tensor, heads: int) -> Tensor:
    """(b, L, H·P) out_proj input -> (b, L, H): the norm of each head's contribution to the block output."""
    w = out_proj.weight.float().view(out_proj.out_features, heads, -1)  # (d, H, P)
    x = a.float().unflatten(-1, (heads, -1))  # (b, L, H, P)
    return torch.einsum("blhp,dhp->blhd", x, w).norm(dim=-1)


@torch.no_grad()
def estimate_importance(model: nn.Module, calib: Calib, depth: bool = True) -> Importance:
    """Scores for every prunable unit of `model` from forward passes over `calib` (the model is not changed)."""
    if not calib:
        raise ValueError("estimate_importance: the calibration set is empty")
    was = model.training
    model.eval()
    c = model.config
    sums: dict[str, Tensor] = {}
    hooks = []

    def add(key: str, value: Tensor) -> None:
        sums[key] = sums[key] + value if key in sums else value

    def energy(x: Tensor) -> Tensor:  # (..., c) -> (c,) sum of squares over tokens
        return x.detach().float().pow(2).flatten(0, -2).sum(0)

    norms = {f"backbone.layers.{i}.norm": blk.norm for i, blk in enumerate(model.backbone.layers)}
    norms["backbone.norm_f"] = model.backbone.norm_f
    for name, norm in norms.items():
        assert isinstance(norm, RMSNorm)
        hooks.append(norm.register_forward_hook(lambda m, args, out: add("hidden", _aggregate(out))))
        hooks.append(norm.register_forward_pre_hook(lambda m, args, name=name: add(f"energy:{name}",
                                                                                    energy(args[0]))))
    tokens = sum(x.numel() for x, _ in calib)
    for i, blk in enumerate(model.backbone.layers):
        if blk.kind == "-":
            hooks.append(blk.mixer.down_proj.register_forward_pre_hook(
                lambda m, args, i=i: add(f"mlp.{i}", _aggregate(args[0]))))
        elif blk.kind == "M":
            hooks.append(blk.mixer.out_proj.register_forward_pre_hook(
                lambda m, args, i=i: add(f"mamba.{i}", _aggregate(_head_outputs(m, args[0], c.mamba_num_heads)))))
            hooks.append(blk.mixer.norm.register_forward_pre_hook(  # gated norm input: y · silu(z)
                lambda m, args, i=i: add(f"energy:backbone.layers.{i}.mixer.norm",
                                         energy(args[0].float() * F.silu(args[1].float())))))
    try:
        base = calibration_loss(model, calib)
    finally:
        for h in hooks:
            h.remove()
    imp = Importance(hidden=sums["hidden"].sqrt(), base_loss=base)
    for key, value in sums.items():
        kind, _, idx = key.partition(".")
        if key.startswith("energy:"):
            imp.norm_energy[key[len("energy:"):]] = value / tokens
        elif kind == "mlp":
            imp.mlp[int(idx)] = value.sqrt()
        elif kind == "mamba":
            imp.mamba_heads[int(idx)] = value.sqrt()
    if depth:
        imp.layers = layer_importance(model, calib, base)
    model.train(was)
    return imp


@torch.no_grad()
def layer_importance(model: nn.Module, calib: Calib, base_loss: float | None = None) -> Tensor:
    """(num_layers,) calibration-loss increase when each block alone is replaced by the identity."""
    base = calibration_loss(model, calib) if base_loss is None else base_loss
    layers = model.backbone.layers
    scores = []
    for i in range(len(layers)):
        block = layers[i]
        layers[i] = _Skip()
        try:
            scores.append(calibration_loss(model, calib) - base)
        finally:
            layers[i] = block
    return torch.tensor(scores)
