"""Minitron-style structured pruning: drop blocks, shrink hidden size, MLP size and Mamba heads to a target.

`prune_model(model, importance, plan)` returns a new, smaller `HybridLM` whose weights are slices of the
original: the units with the highest activation importance (`hytron.tune.importance`) are kept, in their
original order. Every width stays uniform across layers (one `hidden_size`, `intermediate_size`,
`mamba_num_heads` in the config), as Nemotron-H's config requires, while each layer keeps its own best units.
Mamba heads are pruned group-aware: the same number per B/C group, so head h still reads group h // (H/G)
and the gated norm keeps G equal groups. Attention heads, head dims and the SSM state size are kept (the
Nano 2 12B → 9B compression kept them too: 62 → 56 layers, hidden 5120 → 4480, FFN 20480 → 15680).

`search_plan` picks a plan for a parameter target: for each depth / Mamba-head / hidden candidate it solves
for the MLP size that hits the target, prunes, and ranks candidates by calibration loss before any retraining
(Minitron's search ranks after a short distillation instead; this is the cheap proxy). Distil afterwards
(`hytron.tune.finetune` with the original model as teacher) to recover.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from hytron.model import HybridConfig, HybridLM
from hytron.tune.importance import Calib, Importance, calibration_loss

ROUND = 8  # widths are rounded to multiples of this (tensor-core friendly shapes)


@dataclass(frozen=True)
class PrunePlan:
    drop_layers: tuple[int, ...] = ()
    hidden_size: int | None = None  # None: keep
    intermediate_size: int | None = None
    mamba_num_heads: int | None = None

    def config(self, base: HybridConfig) -> HybridConfig:
        """The pruned model's config (validated: a bad plan raises ConfigError naming the field)."""
        bad = [i for i in self.drop_layers if not 0 <= i < base.num_layers]
        if bad:
            raise ValueError(f"drop_layers: {bad} out of range for {base.num_layers} layers")
        pattern = "".join(ch for i, ch in enumerate(base.pattern) if i not in set(self.drop_layers))
        if not pattern:
            raise ValueError("drop_layers: cannot drop every layer")
        checks = (("hidden_size", self.hidden_size, base.hidden_size),
                  ("intermediate_size", self.intermediate_size, base.intermediate_size),
                  ("mamba_num_heads", self.mamba_num_heads, base.mamba_num_heads))
        for name, new, old in checks:
            if new is not None and not 0 < new <= old:
                raise ValueError(f"{name}: pruning keeps 1..{old}, got {new}")
        return base.replace(pattern=pattern, name="", hidden_size=self.hidden_size or base.hidden_size,
                            intermediate_size=self.intermediate_size or base.intermediate_size,
                            mamba_num_heads=self.mamba_num_heads or base.mamba_num_heads)

    def to_dict(self) -> dict:
        return {**asdict(self), "drop_layers": list(self.drop_layers)}


def _rms_fix(energy: Tensor | None, kept: Tensor, groups: int = 1) -> Tensor | float:
    """Factor for an RMS norm's kept weights so that, on calibration statistics, the kept channels come out
    as large as before: the norm now divides by the RMS of fewer channels, sqrt(mean_kept E / mean_all E)
    (per group for the Mamba gated norm). 1 without statistics."""
    if energy is None:
        return 1.0
    all_mean = energy.view(groups, -1).mean(-1)  # (G,)
    kept_mean = energy[kept].view(groups, -1).mean(-1)
    fix = (kept_mean / all_mean.clamp(min=1e-12)).sqrt()
    return fix.repeat_interleave(kept.numel() // groups)


def _top(scores: Tensor, n: int) -> Tensor:
    """Indices of the n highest scores, in ascending index order (the kept units stay in place)."""
    return scores.topk(n).indices.sort().values


def _mamba_heads(scores: Tensor, groups: int, keep: int) -> Tensor:
    """Group-aware head choice: the best keep/G heads inside each group of H/G heads."""
    if keep % groups:
        raise ValueError(f"mamba_num_heads: {keep} is not a multiple of n_groups={groups}")
    per = scores.numel() // groups
    return torch.cat([g * per + _top(scores[g * per:(g + 1) * per], keep // groups) for g in range(groups)])


@torch.no_grad()
def prune_model(model: HybridLM, importance: Importance, plan: PrunePlan) -> HybridLM:
    """A new HybridLM with `plan`'s shape, its weights sliced from `model` by `importance`.

    An MTP head is pruned to the same widths: its hidden channels are the model's, and the units inside its blocks
    (which calibration does not score: the head never runs in the model's forward) are ranked by weight magnitude,
    the product of each unit's input and output weight norms. Its drafts are then only approximate: distil it
    from the pruned model (`hytron.tune.mtp_refresh`, as `hytron prune` does after its recovery run)."""
    old, new = model.config, plan.config(model.config)
    hk = _top(importance.hidden, new.hidden_size)  # kept hidden channels
    src = model.state_dict()
    energy = importance.norm_energy
    out: dict[str, Tensor] = {
        "backbone.embeddings.weight": src["backbone.embeddings.weight"][:, hk],
        "lm_head.weight": src["lm_head.weight"][:, hk],
        "backbone.norm_f.weight": src["backbone.norm_f.weight"][hk] * _rms_fix(energy.get("backbone.norm_f"), hk),
    }
    kept_layers = [i for i in range(old.num_layers) if i not in set(plan.drop_layers)]
    for j, i in enumerate(kept_layers):
        pre = f"backbone.layers.{i}."
        layer = {k[len(pre):]: v for k, v in src.items() if k.startswith(pre)}
        w = _slice_block(layer, old.pattern[i], hk, old, new, importance.mlp.get(i), importance.mamba_heads.get(i),
                         lambda name, pre=pre: energy.get(pre + name))
        out.update({f"backbone.layers.{j}.{k}": v.clone() for k, v in w.items()})
    for j, kind in enumerate(old.mtp_pattern * old.num_nextn_predict_layers):
        pre = f"mtp.layers.{j}."
        layer = {k[len(pre):]: v for k, v in src.items() if k.startswith(pre)}
        w = _slice_block(layer, kind, hk, old, new, *_magnitude_scores(layer, kind, old), lambda name: None)
        if "eh_proj.weight" in layer:  # cat[enorm(embedding), hnorm(hidden)] -> hidden: both halves keep hk
            w["enorm.weight"], w["hnorm.weight"] = layer["enorm.weight"][hk], layer["hnorm.weight"][hk]
            w["eh_proj.weight"] = layer["eh_proj.weight"][hk][:, torch.cat([hk, old.hidden_size + hk])]
        if "final_layernorm.weight" in layer:
            w["final_layernorm.weight"] = layer["final_layernorm.weight"][hk]
        out.update({pre + k: v.clone() for k, v in w.items()})
    with torch.device("meta"):
        pruned = HybridLM(new)
    missing = set(pruned.state_dict()) - set(out)
    if missing:  # a mixer field this function does not slice: fail loudly rather than leave weights random
        raise ValueError(f"prune_model: no slicing rule for {sorted(missing)[:4]}")
    pruned.load_state_dict(out, assign=True)
    return pruned.eval()


def _magnitude_scores(layer: dict[str, Tensor], kind: str, config: HybridConfig) -> tuple[Tensor | None, ...]:
    """(MLP neuron scores, Mamba head scores) of one block from its weights alone: each unit's input weight norm
    times its output weight norm (for blocks calibration cannot score, the MTP head's)."""
    if kind == "-":
        up, down = layer["mixer.up_proj.weight"], layer["mixer.down_proj.weight"]
        return up.float().norm(dim=1) * down.float().norm(dim=0), None
    if kind == "M":
        H, P = config.mamba_num_heads, config.mamba_head_dim
        x_rows = layer["mixer.in_proj.weight"][config.mamba_inner:2 * config.mamba_inner].float()  # x's rows
        cols = layer["mixer.out_proj.weight"].float()
        return None, x_rows.view(H, P, -1).norm(dim=(1, 2)) * cols.view(-1, H, P).norm(dim=(0, 2))
    return None, None


def _slice_block(layer: dict[str, Tensor], kind: str, hk: Tensor, old: HybridConfig, new: HybridConfig,
                 mlp_scores: Tensor | None, head_scores: Tensor | None, energy) -> dict[str, Tensor]:
    """One block's weights (names relative to the block) at the new widths: hidden channels `hk`, the best
    `new.intermediate_size` MLP neurons and `new.mamba_num_heads` Mamba heads by the given scores; `energy(name)`
    gives a norm's calibration input energy (or None) for its rescaling."""
    P, gn = old.mamba_head_dim, old.n_groups * old.ssm_state_size
    w: dict[str, Tensor] = {"norm.weight": layer["norm.weight"][hk] * _rms_fix(energy("norm"), hk)}
    if kind == "M":
        heads = _mamba_heads(head_scores, old.n_groups, new.mamba_num_heads)
        ch = (heads[:, None] * P + torch.arange(P)).flatten()  # kept channels of d_inner
        di = old.mamba_inner
        bc = torch.arange(di, di + 2 * gn)  # conv channels of B and C: all kept
        rows = torch.cat([ch, di + ch, di + bc, 2 * di + 2 * gn + heads])  # in_proj: [z | x | B | C | dt]
        w["mixer.in_proj.weight"] = layer["mixer.in_proj.weight"][rows][:, hk]
        conv_rows = torch.cat([ch, bc])
        w["mixer.conv1d.weight"] = layer["mixer.conv1d.weight"][conv_rows]
        if "mixer.conv1d.bias" in layer:
            w["mixer.conv1d.bias"] = layer["mixer.conv1d.bias"][conv_rows]
        for name in ("A_log", "D", "dt_bias"):
            w[f"mixer.{name}"] = layer[f"mixer.{name}"][heads]
        w["mixer.norm.weight"] = layer["mixer.norm.weight"][ch] * _rms_fix(energy("mixer.norm"), ch, old.n_groups)
        w["mixer.out_proj.weight"] = layer["mixer.out_proj.weight"][hk][:, ch]
    elif kind == "*":
        for name in ("q_proj", "k_proj", "v_proj"):
            w[f"mixer.{name}.weight"] = layer[f"mixer.{name}.weight"][:, hk]
        w["mixer.o_proj.weight"] = layer["mixer.o_proj.weight"][hk]
    elif kind == "-":
        neurons = _top(mlp_scores, new.intermediate_size)
        w["mixer.up_proj.weight"] = layer["mixer.up_proj.weight"][neurons][:, hk]
        w["mixer.down_proj.weight"] = layer["mixer.down_proj.weight"][hk][:, neurons]
    else:  # MoE: only the hidden dimension is pruned; experts keep their widths
        w["mixer.gate.weight"] = layer["mixer.gate.weight"][:, hk]
        w["mixer.gate.e_score_correction_bias"] = layer["mixer.gate.e_score_correction_bias"]
        if "mixer.fc1_latent_proj.weight" in layer:  # LatentMoE: the experts live in the latent; unchanged
            w["mixer.fc1_latent_proj.weight"] = layer["mixer.fc1_latent_proj.weight"][:, hk]
            w["mixer.fc2_latent_proj.weight"] = layer["mixer.fc2_latent_proj.weight"][hk]
            w["mixer.experts.up_proj"] = layer["mixer.experts.up_proj"]
            w["mixer.experts.down_proj"] = layer["mixer.experts.down_proj"]
        else:
            w["mixer.experts.up_proj"] = layer["mixer.experts.up_proj"][:, :, hk]
            w["mixer.experts.down_proj"] = layer["mixer.experts.down_proj"][:, hk]
        if "mixer.shared_experts.up_proj.weight" in layer:
            w["mixer.shared_experts.up_proj.weight"] = layer["mixer.shared_experts.up_proj.weight"][:, hk]
            w["mixer.shared_experts.down_proj.weight"] = layer["mixer.shared_experts.down_proj.weight"][hk]
    return w


def _round(x: float) -> int:
    return max(ROUND, int(round(x / ROUND)) * ROUND)


def candidate_plans(config: HybridConfig, importance: Importance, target_params: int,
                    max_depth_fraction: float = 0.25, min_width_fraction: float = 0.5) -> list[PrunePlan]:
    """Plans whose parameter count lands on `target_params`: every (blocks dropped, Mamba heads, hidden size)
    on a grid, with the MLP size solved for the target (the count is linear in it)."""
    order = importance.layers.argsort().tolist() if importance.layers is not None else []
    max_drop = int(config.num_layers * max_depth_fraction) if order else 0
    R, G = config.mamba_num_heads // config.n_groups, config.n_groups
    head_options = sorted({G * r for r in range(max(1, int(R * min_width_fraction)), R + 1)}, reverse=True)
    d = config.hidden_size
    hidden_options = sorted({_round(d * f / 16) for f in range(int(16 * min_width_fraction), 17)} | {d},
                            reverse=True)
    plans = []
    for n_drop in range(max_drop + 1):
        drop = tuple(sorted(order[:n_drop]))
        for heads in head_options if "M" in config.pattern else [config.mamba_num_heads]:
            for hidden in hidden_options:
                hidden = min(hidden, d)
                base = PrunePlan(drop, hidden, None, heads).config(config)
                n_mlp = base.pattern.count("-")
                if n_mlp:
                    fixed = base.replace(intermediate_size=1).num_params() - 2 * hidden * n_mlp
                    ffn = _round((target_params - fixed) / (2 * hidden * n_mlp))
                    if not config.intermediate_size * min_width_fraction <= ffn <= config.intermediate_size:
                        continue
                else:
                    ffn = config.intermediate_size
                plan = PrunePlan(drop, hidden, ffn, heads)
                if abs(plan.config(config).num_params() - target_params) <= 0.02 * target_params:
                    plans.append(plan)
    return plans


def search_plan(model: HybridLM, importance: Importance, target_params: int, calib: Calib,
                max_candidates: int = 16) -> tuple[PrunePlan, list[dict]]:
    """The candidate plan with the lowest calibration loss after pruning; and every evaluated candidate."""
    plans = candidate_plans(model.config, importance, target_params)
    if not plans:
        now = model.config.num_params()
        raise ValueError(f"target_params={target_params:,}: no pruning plan within 2% of it (the model has {now:,}; "
                         f"hytron prunes at most a quarter of the blocks and half of each width)")
    if len(plans) > max_candidates:  # an even spread over depth / heads / hidden choices
        step = len(plans) / max_candidates
        plans = [plans[int(i * step)] for i in range(max_candidates)]
    table = []
    for plan in plans:
        pruned = prune_model(model, importance, plan)
        table.append({**plan.to_dict(), "params": pruned.num_params(), "calib_loss": calibration_loss(pruned, calib)})
    best = min(range(len(plans)), key=lambda i: table[i]["calib_loss"])
    return plans[best], table
