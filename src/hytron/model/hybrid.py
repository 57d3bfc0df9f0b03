"""HybridLM: blocks of RMSNorm → one mixer (Mamba-2, attention, MLP or MoE) → residual; final norm; LM head.

Every matmul of the model goes through a plain `nn.Linear` (the MoE experts' 3-D tensors aside), so
precision code (`hytron.lowp.convert`) swaps them from outside; this file never mentions precision.
Parameter names equal the Hugging Face Nemotron-H on-disk names (`backbone.…`, `lm_head.weight`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hytron.model.attention import Attention
from hytron.model.cache import HybridCache
from hytron.model.config import HybridConfig
from hytron.model.mamba2 import GatedRMSNorm, Mamba2
from hytron.model.mlp import MLP
from hytron.model.moe import Experts, MoE, Router


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, weight applied in fp32, result cast back (as NemotronHRMSNorm)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * h).to(x.dtype)


class Block(nn.Module):
    def __init__(self, config: HybridConfig, kind: str):
        super().__init__()
        self.kind = kind
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        if kind == "M":
            self.mixer = Mamba2(config)
        elif kind == "*":
            self.mixer = Attention(config)
        elif kind == "-":
            self.mixer = MLP(config.hidden_size, config.intermediate_size)
        else:
            self.mixer = MoE(config)

    def forward(self, h: Tensor, state=None, lengths: Tensor | None = None) -> Tensor:
        x = self.norm(h)
        if self.kind == "M":
            x = self.mixer(x, state)
        elif self.kind == "*":
            x = self.mixer(x, state, lengths)
        else:
            x = self.mixer(x)
        return h + x


class Backbone(nn.Module):
    def __init__(self, config: HybridConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, ch) for ch in config.pattern)
        self.norm_f = RMSNorm(config.hidden_size, config.norm_eps)


class HybridLM(nn.Module):
    """A Nemotron-H-family causal language model. `model(input_ids)` -> logits (b, L, vocab)."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    # ---- forward -------------------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, cache: HybridCache | None = None, last_only: bool = False,
                return_hidden: bool = False) -> Tensor:
        """input_ids (b, L) -> logits (b, L, vocab), or (b, 1, vocab) with `last_only`.

        With a `cache`, the tokens continue each row's sequence and the cache is updated (prefill or decode).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        h = self.backbone.embeddings(input_ids)
        if cache is not None:
            if cache.batch_size != input_ids.size(0):
                raise ValueError(f"cache holds {cache.batch_size} rows but input_ids has {input_ids.size(0)}")
            cache.reserve(int(cache.lengths.max()) + input_ids.size(1))
            for block, state in zip(self.backbone.layers, cache.layers):
                h = block(h, state, cache.lengths)
            cache.advance(input_ids.size(1))
        else:
            for block in self.backbone.layers:
                h = block(h)
        h = self.backbone.norm_f(h)
        if last_only:
            h = h[:, -1:]
        if return_hidden:
            return h
        return self.lm_head(h)

    def loss(self, input_ids: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
        """Mean next-token cross-entropy over targets != ignore_index, computed in fp32."""
        logits = self(input_ids)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index)

    def new_cache(self, batch_size: int = 1, capacity: int = 256, dtype: torch.dtype | None = None) -> HybridCache:
        p = self.lm_head.weight
        return HybridCache(self.config, batch_size, device=p.device, dtype=dtype or p.dtype, capacity=capacity)

    # ---- initialisation and optimisation helpers ------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, σ) for matrices; residual-output projections scaled by 1/√(2·layers) (GPT-2);
        Mamba's A, D and dt_bias by the S4D/Mamba-2 rules; norms to one; router bias to zero."""
        c = self.config
        std = c.initializer_range
        out_std = std / math.sqrt(2 * c.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                s = out_std if name.endswith(("out_proj", "o_proj", "down_proj")) else std
                module.weight.normal_(0.0, s, generator=generator)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std, generator=generator)
            elif isinstance(module, (RMSNorm, GatedRMSNorm)):
                module.weight.fill_(1.0)
            elif isinstance(module, Mamba2):
                module.init_ssm(c.time_step_min, c.time_step_max, c.time_step_floor, generator=generator)
                bound = 1 / math.sqrt(c.conv_kernel)
                module.conv1d.weight.uniform_(-bound, bound, generator=generator)
                if module.conv1d.bias is not None:
                    module.conv1d.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, Router):
                module.weight.normal_(0.0, std, generator=generator)
                module.e_score_correction_bias.zero_()
            elif isinstance(module, Experts):
                module.up_proj.normal_(0.0, std, generator=generator)
                module.down_proj.normal_(0.0, out_std, generator=generator)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: no decay on norms, biases, A_log, D and dt_bias (all 1-D); decay on matrices."""
        decay, no_decay = [], []
        for _, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.dim() < 2 else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= self.backbone.embeddings.weight.numel() + self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward): 6·(active matmul params) plus
        attention scores (12·layers·L·Hq·Dh, PaLM appendix B) and the SSD scan's chunk terms."""
        c = self.config
        n = c.num_params(active=True, embeddings=False) + c.vocab_size * c.hidden_size  # lm_head matmul
        f = 6 * n
        f += 12 * c.pattern.count("*") * seq_len * c.num_attention_heads * c.head_dim / 2  # causal half
        # SSD per token and layer: intra-chunk (Q·(N+P)·H) and state terms (2·N·P·H), fwd+bwd x3, x2 mult-add
        q = min(c.chunk_size, seq_len)
        f += 6 * c.pattern.count("M") * c.mamba_num_heads * (q * (c.ssm_state_size + c.mamba_head_dim)
                                                             + 2 * c.ssm_state_size * c.mamba_head_dim)
        return float(f)

    # ---- Hugging Face Nemotron-H format -------------------------------------------------------------
    def save_pretrained(self, path: str | Path, tokenizer=None, max_shard_bytes: int = 2 * 1024**3,
                        dtype: torch.dtype | None = None) -> Path:
        from hytron.model.hf import save_pretrained

        return save_pretrained(self, path, tokenizer=tokenizer, max_shard_bytes=max_shard_bytes, dtype=dtype)

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None, dtype: torch.dtype | None = None) -> HybridLM:
        from hytron.model.hf import load_pretrained

        return load_pretrained(cls, path, device=device, dtype=dtype)
