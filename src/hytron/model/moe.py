"""Mixture of experts as in Nemotron 3 Nano and Super: sigmoid router with score-correction bias, top-k routed
experts (in a smaller latent space for Super's LatentMoE) + a shared expert on the full width."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hytron.model.mlp import MLP, relu2

# the router's tensors stay fp32 whatever dtype the rest of a checkpoint is loaded or saved in (transformers'
# `_keep_in_fp32_modules_strict`): top-k over sigmoid scores is decided by differences bf16 would round away
ROUTER_FP32 = ("mixer.gate.weight", "mixer.gate.e_score_correction_bias")


def cast_keeping_router_fp32(tensors: dict[str, Tensor], dtype: torch.dtype | None) -> dict[str, Tensor]:
    """Floating tensors cast to `dtype` (None: left as they are), the router's (`ROUTER_FP32`, in the main model
    and the MTP head) to fp32."""
    def cast(name: str, v: Tensor) -> Tensor:
        if not v.is_floating_point():
            return v
        if name.endswith(ROUTER_FP32):
            return v.float()
        return v if dtype is None else v.to(dtype)

    return {k: cast(k, v) for k, v in tensors.items()}


class Router(nn.Module):
    """Sigmoid scores; choice by score + e_score_correction_bias (aux-loss-free balancing, DeepSeek-V3);
    weights are the unbiased scores of the chosen experts, optionally normalised, times a scaling factor."""

    def __init__(self, config):
        super().__init__()
        c = config
        self.weight = nn.Parameter(torch.zeros(c.n_routed_experts, c.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(c.n_routed_experts))
        self.top_k, self.n_group, self.topk_group = c.num_experts_per_tok, c.n_group, c.topk_group
        self.norm_topk_prob, self.scale = c.norm_topk_prob, c.routed_scaling_factor

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (T, d) -> (weights (T, k) fp32, expert indices (T, k))."""
        scores = F.linear(x.float(), self.weight.float()).sigmoid()  # (T, E)
        choice = scores + self.e_score_correction_bias.float()
        if self.n_group > 1:  # keep only the best `topk_group` groups, ranked by their top-2 score sum
            T, E = choice.shape
            grouped = choice.view(T, self.n_group, E // self.n_group)
            best = grouped.topk(2, dim=-1).values.sum(-1).topk(self.topk_group, dim=-1).indices
            keep = torch.zeros(T, self.n_group, dtype=torch.bool, device=x.device).scatter_(1, best, True)
            choice = choice.masked_fill(~keep[..., None].expand_as(grouped).reshape(T, E), float("-inf"))
        idx = choice.topk(self.top_k, dim=-1).indices
        w = scores.gather(1, idx)
        if self.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return w * self.scale, idx


class Experts(nn.Module):
    """E non-gated relu² experts stored as 3-D tensors: up (E, F, w), down (E, w, F); w is the hidden size, or
    the latent size with LatentMoE."""

    def __init__(self, n: int, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.up_proj = nn.Parameter(torch.empty(n, intermediate_size, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(n, hidden_size, intermediate_size))

    def forward(self, x: Tensor, weights: Tensor, idx: Tensor) -> Tensor:
        """x: (T, w), weights/idx: (T, k) -> (T, w); each expert runs once on the tokens routed to it."""
        out = torch.zeros_like(x, dtype=torch.float32)
        flat = idx.reshape(-1)
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=self.up_proj.size(0)).tolist()
        token = order // idx.size(1)
        wsorted = weights.reshape(-1)[order]
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            t = token[start:start + n]
            y = F.linear(relu2(F.linear(x[t], self.up_proj[e])), self.down_proj[e])
            out.index_add_(0, t, (y * wsorted[start:start + n, None]).float())
            start += n
        return out.to(x.dtype)


class MoE(nn.Module):
    """Router on the full width u; routed experts on z = fc1_latent_proj(u) when `moe_latent_size` is set
    (LatentMoE, arXiv 2601.18089: expert weights and all-to-all bytes shrink by d/ℓ, spent on more experts),
    brought back by fc2_latent_proj; the shared expert always sees the full-width u."""

    def __init__(self, config):
        super().__init__()
        c = config
        latent = c.moe_latent_size
        self.gate = Router(c)
        self.experts = Experts(c.n_routed_experts, latent or c.hidden_size, c.moe_intermediate_size)
        self.shared_experts = (MLP(c.hidden_size, c.moe_shared_expert_intermediate_size)
                               if c.n_shared_experts else None)
        if latent is not None:
            self.fc1_latent_proj = nn.Linear(c.hidden_size, latent, bias=False)
            self.fc2_latent_proj = nn.Linear(latent, c.hidden_size, bias=False)
        else:
            self.fc1_latent_proj = self.fc2_latent_proj = None

    def forward(self, h: Tensor) -> Tensor:  # (b, L, d) -> (b, L, d)
        flat = h.reshape(-1, h.size(-1))  # (T, d)
        weights, idx = self.gate(flat)
        z = flat if self.fc1_latent_proj is None else self.fc1_latent_proj(flat)  # (T, ℓ)
        routed = self.experts(z, weights, idx)  # weighted sum in the latent space: fc2 is linear, no bias
        if self.fc2_latent_proj is not None:
            routed = self.fc2_latent_proj(routed)  # (T, d)
        out = routed.view_as(h)
        if self.shared_experts is not None:
            out = out + self.shared_experts(h)
        return out
