"""HybridLM: blocks of RMSNorm → one mixer (Mamba-2, attention, MLP or MoE) → residual; final norm; LM head;
optionally an MTP head (Nemotron 3 Super) whose blocks predict further tokens through the same embedding and head.

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
from hytron.model.loss import cross_entropy
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
        return F.rms_norm(x.float(), x.shape[-1:], self.weight.float(), self.eps).to(x.dtype)


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

    def forward(self, h: Tensor, state=None, lengths: Tensor | None = None, fed: Tensor | None = None) -> Tensor:
        x = self.norm(h)
        if self.kind == "M":
            x = self.mixer(x, state, fed)
        elif self.kind == "*":
            x = self.mixer(x, state, lengths)
        else:
            x = self.mixer(x)
        return h + x


class MTPBlock(Block):
    """One block of a multi-token-prediction module. The module's first block also fuses the next token's
    embedding with the incoming hidden state, eh_proj(cat[enorm(e), hnorm(h)]) (embedding first); its last
    ends with final_layernorm. Names as published: `mtp.layers.{module * len(mtp_pattern) + i}.*`."""

    def __init__(self, config: HybridConfig, kind: str, first: bool, last: bool):
        super().__init__(config, kind)
        d = config.hidden_size
        if first:
            self.enorm = RMSNorm(d, config.norm_eps)
            self.hnorm = RMSNorm(d, config.norm_eps)
            self.eh_proj = nn.Linear(2 * d, d, bias=False)
        if last:
            self.final_layernorm = RMSNorm(d, config.norm_eps)


class MTP(nn.Module):
    """The stored MTP modules (DeepSeek-V3 §2.2; Nemotron 3 Super stores one, "*E"). Depth k (1-based) uses
    module min(k, n) - 1, so D depths may reuse one module (Megatron's `mtp_use_repeated_layer`)."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        p = config.mtp_pattern
        self.blocks_per_module = len(p)
        self.num_modules = config.num_nextn_predict_layers
        self.layers = nn.ModuleList(MTPBlock(config, ch, i == 0, i == len(p) - 1)
                                    for _ in range(self.num_modules) for i, ch in enumerate(p))

    def step(self, depth: int, hidden: Tensor, embedded: Tensor, cache: HybridCache | None = None) -> Tensor:
        """One prediction depth: hidden (b, L, d) at t (the main model's norm_f output, or the previous depth's
        output), embedded (b, L, d) of token t+depth -> (b, L, d) after final_layernorm, for the LM head.
        With a `cache` (`HybridLM.new_mtp_cache`), the L positions continue each row's sequence (drafting)."""
        m = min(depth, self.num_modules) - 1
        blocks = self.layers[m * self.blocks_per_module:(m + 1) * self.blocks_per_module]
        first = blocks[0]
        h = first.eh_proj(torch.cat([first.enorm(embedded), first.hnorm(hidden)], dim=-1))
        if cache is None:
            for block in blocks:
                h = block(h)
        else:
            cache.reserve(int(cache.lengths.max()) + h.size(1))
            for block, state in zip(blocks, cache.layers):
                h = block(h, state, cache.lengths)
            cache.advance(h.size(1))
        return blocks[-1].final_layernorm(h)


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
        self.mtp = MTP(config) if config.num_nextn_predict_layers else None
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    # ---- forward -------------------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, cache: HybridCache | None = None, last_only: bool = False,
                return_hidden: bool = False, mtp_depths: int = 0,
                fed: Tensor | None = None) -> Tensor | tuple[Tensor, list[Tensor]]:
        """input_ids (b, L) -> logits (b, L, vocab), or (b, 1, vocab) with `last_only`.

        With a `cache`, the tokens continue each row's sequence and the cache is updated (prefill or decode).
        `fed` (b,) (with a cache, L > 1): row r's prompt slice is its first fed[r] >= 1 tokens, right-padded to L
        (prompts of different lengths prefilled in one forward). Exact, not approximate: a padded position comes
        after every real one, so causal attention never reads it and its KV lands past the row's length; Mamba
        gets Δ = 0 and x = 0 there (no decay, no input) and keeps the conv inputs that end at the row's last real
        token. The cache advances row r by fed[r]; `last_only` takes each row's last real position.
        With `mtp_depths` D > 0 (training; one call so DDP/FSDP see the MTP head): (logits, [depth-k MTP logits
        (b, L-k, vocab) for k = 1..D], see `mtp_logits`).
        """
        if mtp_depths:
            if cache is not None or last_only or return_hidden:
                raise ValueError("mtp_depths works on whole sequences: no cache, last_only or return_hidden")
            hidden = self(input_ids, return_hidden=True)
            return self.lm_head(hidden), self.mtp_logits(input_ids, hidden, mtp_depths)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        if fed is not None:
            fed = self._check_fed(fed, input_ids, cache)
        h = self.backbone.embeddings(input_ids)
        if cache is not None:
            if cache.batch_size != input_ids.size(0):
                raise ValueError(f"cache holds {cache.batch_size} rows but input_ids has {input_ids.size(0)}")
            cache.reserve(int(cache.lengths.max()) + input_ids.size(1))
            for block, state in zip(self.backbone.layers, cache.layers):
                h = block(h, state, cache.lengths, fed)
            cache.advance(input_ids.size(1) if fed is None else fed)
        else:
            for block in self.backbone.layers:
                h = block(h)
        h = self.backbone.norm_f(h)
        if last_only:
            h = h[:, -1:] if fed is None else h[torch.arange(h.size(0), device=h.device), fed - 1][:, None]
        if return_hidden:
            return h
        return self.lm_head(h)

    @staticmethod
    def _check_fed(fed: Tensor, input_ids: Tensor, cache: HybridCache | None) -> Tensor | None:
        """`fed` as a long tensor on the inputs' device, or None when every row is whole (no padding)."""
        b, L = input_ids.shape
        if cache is None or L == 1:
            raise ValueError("fed (right-padded rows) needs a cache and more than one position per row")
        if any(getattr(s, "track", False) for s in cache.layers):  # the tracked scan has no notion of padding
            raise ValueError("fed (right-padded rows) cannot be used while the cache tracks states for rollback")
        fed = torch.as_tensor(fed, dtype=torch.long, device=input_ids.device).reshape(-1)
        if fed.numel() != b or bool(((fed < 1) | (fed > L)).any()):
            raise ValueError(f"fed must hold {b} counts in 1..{L}, got {fed.tolist()}")
        return None if bool((fed == L).all()) else fed

    def mtp_logits(self, input_ids: Tensor, hidden: Tensor, depths: int) -> list[Tensor]:
        """Logits of the MTP head for depths 1..D, chained as in DeepSeek-V3 and Megatron: depth k takes the
        hidden state at t (depth 0: the main model's, `forward(..., return_hidden=True)`) and the embedding of
        token t+k, and predicts token t+1+k. input_ids (b, L), hidden (b, L, d) -> D tensors (b, L-k, vocab).
        """
        if self.mtp is None:
            raise ValueError("this model has no MTP head (num_nextn_predict_layers=0); set "
                             "num_nextn_predict_layers and mtp_pattern to add one")
        if not 1 <= depths < input_ids.size(1):
            raise ValueError(f"depths must be in 1..{input_ids.size(1) - 1} for {input_ids.size(1)} tokens, "
                             f"got {depths}")
        out = []
        for k in range(1, depths + 1):
            hidden = self.mtp.step(k, hidden[:, :-1], self.backbone.embeddings(input_ids[:, k:]))  # (b, L-k, d)
            out.append(self.lm_head(hidden))
        return out

    def loss(self, input_ids: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
        """Mean next-token cross-entropy over targets != ignore_index, computed in fp32."""
        logits = self(input_ids)
        return cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index)

    def new_cache(self, batch_size: int = 1, capacity: int = 256, dtype: torch.dtype | None = None) -> HybridCache:
        p = self.lm_head.weight
        return HybridCache(self.config, batch_size, device=p.device, dtype=dtype or p.dtype, capacity=capacity)

    def new_mtp_cache(self, batch_size: int = 1, capacity: int = 256, dtype: torch.dtype | None = None) -> HybridCache:
        """The MTP head's own inference state (its blocks' KV / Mamba state), for drafting with one module."""
        if self.mtp is None:
            raise ValueError("this model has no MTP head (num_nextn_predict_layers=0)")
        p = self.lm_head.weight
        return HybridCache(self.config, batch_size, device=p.device, dtype=dtype or p.dtype, capacity=capacity,
                           pattern=self.config.mtp_pattern)

    def add_mtp(self, mtp_pattern: str, num_modules: int = 1, generator: torch.Generator | None = None) -> None:
        """Give a model without an MTP head a freshly initialised one of `num_modules` modules, each the blocks
        of `mtp_pattern` (e.g. "*E"); the config is updated, so the model saves and reloads with it."""
        if self.mtp is not None:
            raise ValueError(f"the model already has an MTP head (mtp_pattern {self.config.mtp_pattern!r})")
        self.config = self.config.replace(num_nextn_predict_layers=num_modules, mtp_pattern=mtp_pattern)
        p = self.lm_head.weight
        self.mtp = MTP(self.config).to(device=p.device, dtype=p.dtype)
        for module in self.mtp.modules():
            if isinstance(module, Router):
                module.float()  # the router computes in fp32 (hytron.model.moe.ROUTER_FP32)
        self.init_weights(generator, only=self.mtp)

    # ---- initialisation and optimisation helpers ------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None, only: nn.Module | None = None) -> None:
        """Normal(0, σ) for matrices; residual-output projections scaled by 1/√(2·layers) (GPT-2);
        Mamba's A, D and dt_bias by the S4D/Mamba-2 rules; norms to one; router bias to zero.
        `only`: initialise just this submodule (a head added to a trained model)."""
        c = self.config
        std = c.initializer_range
        out_std = std / math.sqrt(2 * c.num_layers)
        for name, module in (only or self).named_modules():
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

    def num_params(self, embeddings: bool = True, mtp: bool = False) -> int:
        """As `HybridConfig.num_params`: the MTP head counts only with `mtp=True`."""
        n = sum(p.numel() for p in self.parameters())
        if self.mtp is not None and not mtp:
            n -= sum(p.numel() for p in self.mtp.parameters())
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
