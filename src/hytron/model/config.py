"""HybridConfig: the shape of a Nemotron-H-family model, validated, with published and tiny presets by name."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from hytron.config import ConfigError, from_dict, to_dict

BLOCK_KINDS = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}
MAX_LAYERS = 1024  # the largest published hybrid (Nemotron-H 56B) has 118
# Upper bounds on every size a config.json can set, checked before anything is allocated (a checkpoint is untrusted
# input: issue 26 found `chunk_size: 100000` loading and then every prefill trying to allocate 10 GB). Each is far
# above the published shapes (hidden 8192, FFN 32768, 256 Mamba heads, 131072 vocab, 262144 context).
SIZE_LIMITS = {
    "vocab_size": 2**22, "hidden_size": 65536, "num_attention_heads": 1024, "num_key_value_heads": 1024,
    "head_dim": 1024, "intermediate_size": 2**20, "mamba_num_heads": 4096, "mamba_head_dim": 1024,
    "ssm_state_size": 1024, "n_groups": 1024, "conv_kernel": 64, "chunk_size": 1024, "n_routed_experts": 4096,
    "num_experts_per_tok": 4096, "moe_intermediate_size": 2**18, "moe_shared_expert_intermediate_size": 2**20,
    "n_shared_experts": 1, "n_group": 4096, "topk_group": 4096, "max_position_embeddings": 2**24,
    "num_nextn_predict_layers": 64,
}
MAX_MTP_PATTERN = 64  # block kinds in one MTP module (published: 2, "*E")
MAX_PARAMS = 4 * 10**12  # closed-form parameter count (embeddings included) a config may describe


@dataclass
class HybridConfig:
    """A hybrid Mamba-2/attention/MLP/MoE decoder; field names follow Hugging Face `NemotronHConfig`."""

    pattern: str = "M-M*-M-"  # one char per block: M mamba-2, * attention, - MLP, E mixture of experts
    vocab_size: int = 131072
    hidden_size: int = 4096
    # attention (GQA, causal, no positional embeddings)
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    # MLP (non-gated squared ReLU)
    intermediate_size: int = 21504
    # Mamba-2
    mamba_num_heads: int = 128
    mamba_head_dim: int = 64
    ssm_state_size: int = 128
    n_groups: int = 8
    conv_kernel: int = 4
    chunk_size: int = 128
    use_conv_bias: bool = True
    # MoE (Nemotron 3 Nano): sigmoid router with score-correction bias, top-k routed + shared expert
    n_routed_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    moe_shared_expert_intermediate_size: int = 0
    n_shared_experts: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    n_group: int = 1
    topk_group: int = 1
    # LatentMoE (Nemotron 3 Super): routed experts run in a moe_latent_size space between fc1/fc2_latent_proj;
    # the router and the shared expert see the full width. None: experts run at hidden_size (Nano 3).
    moe_latent_size: int | None = None
    # multi-token prediction (Nemotron 3 Super, DeepSeek-V3): num_nextn_predict_layers MTP modules are stored,
    # each eh_proj(cat[enorm(embedding), hnorm(hidden)]) -> the blocks of mtp_pattern -> final_layernorm;
    # they share the embedding and the LM head. HF: num_nextn_predict_layers, mtp_hybrid_override_pattern.
    num_nextn_predict_layers: int = 0
    mtp_pattern: str = ""
    # norms, init, misc
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    time_step_min: float = 0.001  # dt init range only: hytron never clamps dt at run time (like mamba_ssm)
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4
    max_position_embeddings: int = 4096  # informational: no position embeddings; written to config.json
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    name: str = ""  # the preset this came from, if any
    extra: dict = field(default_factory=dict)  # unknown HF config keys, carried through unchanged

    def __post_init__(self) -> None:
        def need(cond: bool, fld: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"HybridConfig.{fld}: {msg} (got {getattr(self, fld)!r})")

        # the pattern first, and by length only: a 10^6-character one is refused at once, not echoed back whole
        if not (isinstance(self.pattern, str) and 0 < len(self.pattern) <= MAX_LAYERS):
            size = len(self.pattern) if isinstance(self.pattern, str) else type(self.pattern).__name__
            raise ConfigError(f"HybridConfig.pattern: must be 1..{MAX_LAYERS} block kinds, one per layer (got {size})")
        for f, limit in SIZE_LIMITS.items():
            value = getattr(self, f)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
                raise ConfigError(f"HybridConfig.{f}: must be an integer in 0..{limit} (got {value!r})")
        for f in ("norm_eps", "initializer_range", "time_step_min", "time_step_max", "time_step_floor",
                  "routed_scaling_factor"):
            value = getattr(self, f)
            need(isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1e6, f,
                 "must be a finite number in 0..1e6")
        bad = sorted(set(self.pattern) - set(BLOCK_KINDS))
        need(not bad, "pattern", f"unknown block kind(s) {bad}; use M (mamba), * (attention), - (mlp), E (moe)")
        if self.moe_latent_size is not None:
            need(isinstance(self.moe_latent_size, int) and not isinstance(self.moe_latent_size, bool)
                 and 0 < self.moe_latent_size <= SIZE_LIMITS["hidden_size"], "moe_latent_size",
                 f"must be None or an integer in 1..{SIZE_LIMITS['hidden_size']}")
        need(isinstance(self.mtp_pattern, str) and len(self.mtp_pattern) <= MAX_MTP_PATTERN, "mtp_pattern",
             f"must be a string of at most {MAX_MTP_PATTERN} block kinds")
        bad = sorted(set(self.mtp_pattern) - set(BLOCK_KINDS))
        need(not bad, "mtp_pattern", f"unknown block kind(s) {bad}; use M (mamba), * (attention), - (mlp), E (moe)")
        if self.num_nextn_predict_layers:
            need(len(self.mtp_pattern) > 0, "mtp_pattern",
                 f"must name the MTP module's blocks (e.g. '*E') when num_nextn_predict_layers="
                 f"{self.num_nextn_predict_layers}")
        else:
            need(not self.mtp_pattern, "mtp_pattern", "needs num_nextn_predict_layers >= 1 (no MTP module stored)")
        kinds = self.pattern + self.mtp_pattern  # every block kind in use, MTP blocks included
        for f in ("vocab_size", "hidden_size", "conv_kernel", "chunk_size", "max_position_embeddings"):
            need(getattr(self, f) > 0, f, "must be positive")
        need(self.norm_eps > 0, "norm_eps", "must be positive")
        if "*" in kinds:
            for f in ("num_attention_heads", "num_key_value_heads", "head_dim"):
                need(getattr(self, f) > 0, f, "must be positive when the pattern has attention (*)")
            need(self.num_attention_heads % self.num_key_value_heads == 0, "num_attention_heads",
                 f"must be a multiple of num_key_value_heads={self.num_key_value_heads}")
        if "-" in kinds:
            need(self.intermediate_size > 0, "intermediate_size", "must be positive when the pattern has MLP (-)")
        if "M" in kinds:
            for f in ("mamba_num_heads", "mamba_head_dim", "ssm_state_size", "n_groups"):
                need(getattr(self, f) > 0, f, "must be positive when the pattern has Mamba (M)")
            need(self.mamba_num_heads % self.n_groups == 0, "mamba_num_heads",
                 f"must be a multiple of n_groups={self.n_groups}")
            need(0 < self.time_step_min <= self.time_step_max, "time_step_min", "need 0 < time_step_min <= max")
        if "E" in kinds:
            need(self.n_routed_experts > 0, "n_routed_experts", "must be positive when the pattern has MoE (E)")
            need(0 < self.num_experts_per_tok <= self.n_routed_experts, "num_experts_per_tok",
                 f"must be in 1..n_routed_experts={self.n_routed_experts}")
            need(self.moe_intermediate_size > 0, "moe_intermediate_size", "must be positive with MoE (E)")
            need(self.n_shared_experts in (0, 1), "n_shared_experts", "must be 0 or 1")
            if self.n_shared_experts:
                need(self.moe_shared_expert_intermediate_size > 0, "moe_shared_expert_intermediate_size",
                     "must be positive with a shared expert")
            need(self.n_group > 0 and self.n_routed_experts % self.n_group == 0, "n_group",
                 f"must divide n_routed_experts={self.n_routed_experts}")
            need(0 < self.topk_group <= self.n_group, "topk_group", f"must be in 1..n_group={self.n_group}")
            if self.n_group > 1:
                need(self.n_routed_experts // self.n_group >= 2, "n_group", "needs >= 2 experts per group")
        n = self.num_params(mtp=True)
        if n > MAX_PARAMS:
            raise ConfigError(f"HybridConfig: describes {n:.3g} parameters, over the {MAX_PARAMS:.0g} limit; "
                              "check hidden_size, vocab_size and the widths")

    # ---- derived sizes -----------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.pattern)

    @property
    def mamba_inner(self) -> int:  # d_inner = H * P ("expand" is not a field: widths are explicit)
        return self.mamba_num_heads * self.mamba_head_dim

    @property
    def conv_dim(self) -> int:  # channels of the depthwise conv: [x | B | C]
        return self.mamba_inner + 2 * self.n_groups * self.ssm_state_size

    def block_counts(self) -> dict[str, int]:
        return {kind: self.pattern.count(ch) for ch, kind in BLOCK_KINDS.items()}

    # ---- parameter and memory accounting (closed form, so published shapes need no allocation) ------
    def block_params(self, ch: str) -> tuple[int, int]:
        """(total, active-per-token) parameters of one block of kind `ch`, its pre-norm included."""
        d = self.hidden_size
        if ch == "M":
            di, gn, h = self.mamba_inner, self.n_groups * self.ssm_state_size, self.mamba_num_heads
            n = d * (2 * di + 2 * gn + h)  # in_proj
            n += self.conv_dim * self.conv_kernel + (self.conv_dim if self.use_conv_bias else 0)
            n += 3 * h + di + di * d  # A_log, D, dt_bias; gated norm; out_proj
            return n + d, n + d
        if ch == "*":
            q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
            n = d * q + 2 * d * kv + q * d
            return n + d, n + d
        if ch == "-":
            n = 2 * d * self.intermediate_size
            return n + d, n + d
        if ch == "E":
            e, f = self.n_routed_experts, self.moe_intermediate_size
            width = self.moe_latent_size or d  # the experts' input/output width
            shared = 2 * d * self.moe_shared_expert_intermediate_size * self.n_shared_experts
            fixed = e * d + shared + (2 * d * self.moe_latent_size if self.moe_latent_size else 0)  # router, latent
            total = fixed + e * 2 * width * f
            active = fixed + self.num_experts_per_tok * 2 * width * f
            return total + d, active + d
        raise ValueError(f"unknown block kind {ch!r}")

    def mtp_params(self, active: bool = False) -> int:
        """Parameters of the stored MTP modules: per module enorm, hnorm, eh_proj (d x 2d), the blocks of
        `mtp_pattern` and final_layernorm. The embedding and LM head are the main model's."""
        d = self.hidden_size
        per_module = 3 * d + 2 * d * d + sum(self.block_params(ch)[1 if active else 0] for ch in self.mtp_pattern)
        return self.num_nextn_predict_layers * per_module

    def num_params(self, active: bool = False, embeddings: bool = True, mtp: bool = False) -> int:
        """Parameter count (active = per token for MoE); embeddings include the untied LM head. The MTP modules
        (a draft / auxiliary-loss head off the main forward path) count only with `mtp=True`: published totals
        (Nemotron 3 Super's 120B) and transformers' NemotronHForCausalLM, which drops `mtp.*`, leave them out."""
        n = sum(self.block_params(ch)[1 if active else 0] for ch in self.pattern) + self.hidden_size
        if embeddings:
            n += 2 * self.vocab_size * self.hidden_size
        if mtp:
            n += self.mtp_params(active)
        return n

    def inference_state_bytes(self, context: int, bytes_per_el: int = 2, ssm_bytes_per_el: int = 4) -> dict:
        """Per-sequence inference memory at `context` tokens: KV cache grows with context, SSM state doesn't.
        `mtp_state`: what the MTP module's own blocks add when it drafts (speculative decoding) over the same
        context; not in `total`, which is plain decoding."""
        def state(pattern: str) -> tuple[int, int, int]:
            n_attn, n_mamba = pattern.count("*"), pattern.count("M")
            kv = n_attn * 2 * self.num_key_value_heads * self.head_dim * context * bytes_per_el
            ssm = n_mamba * self.mamba_num_heads * self.mamba_head_dim * self.ssm_state_size * ssm_bytes_per_el
            conv = n_mamba * self.conv_dim * (self.conv_kernel - 1) * bytes_per_el
            return kv, ssm, conv

        kv, ssm, conv = state(self.pattern)
        mtp = sum(state(self.mtp_pattern * self.num_nextn_predict_layers))
        return {"kv_cache": kv, "ssm_state": ssm, "conv_state": conv, "total": kv + ssm + conv, "mtp_state": mtp}

    # ---- presets and (de)serialisation ---------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides) -> HybridConfig:
        if name not in PRESETS:
            raise KeyError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        return from_dict(cls, {**PRESETS[name]["config"], "name": name, **overrides}, where=f"preset {name}")

    @classmethod
    def from_dict(cls, data: dict) -> HybridConfig:
        return from_dict(cls, data, where="HybridConfig")

    def to_dict(self) -> dict:
        return to_dict(self)

    def replace(self, **changes) -> HybridConfig:
        return dataclasses.replace(self, **changes)


def _nemotron_h(pattern: str, d: int, ffn: int, heads: int, mamba_heads: int, state: int, **kw) -> dict:
    base = dict(pattern=pattern, vocab_size=131072, hidden_size=d, intermediate_size=ffn,
                num_attention_heads=heads, num_key_value_heads=8, head_dim=128, mamba_num_heads=mamba_heads,
                mamba_head_dim=64, ssm_state_size=state, n_groups=8, conv_kernel=4, chunk_size=128,
                max_position_embeddings=8192)
    return {**base, **kw}


_H_4B_8B = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
_H_47B = "M-M-M-M-M-M-M-M-M*-M-M-M-M-M-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-M-M---MM---M-M*-M-M-M-M-M-"
_H_56B = ("M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-"
          "M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-")

# Published shapes: NVIDIA-NeMo/Megatron-Bridge nemotron_h_provider.py and the model cards (see
# shared/research/hybrid-arch.md). `published` is the parameter count the authors state; a test keeps
# our closed-form count within 1% of it.
PRESETS: dict[str, dict] = {
    # ---- nano weight class ------------------------------------------------------------------------
    "nemotron-h-4b": {"class": "nano", "config": _nemotron_h(_H_4B_8B, 3072, 12288, 32, 112, 128)},
    "nemotron-h-8b": {"class": "nano", "published": 8.1e9, "config": _nemotron_h(_H_4B_8B, 4096, 21504, 32, 128, 128)},
    "nano-9b-v2": {"class": "nano", "published": 8.89e9, "config": _nemotron_h(
        "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-", 4480, 15680, 40, 128, 128,
        mamba_head_dim=80, max_position_embeddings=131072)},
    "nano-12b-v2": {"class": "nano", "published": 12.31e9, "config": _nemotron_h(
        "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-", 5120, 20480, 40, 128, 128,
        mamba_head_dim=80, max_position_embeddings=131072)},
    "nemotron-3-nano-30b-a3b": {"class": "nano", "published": 31.6e9, "published_active": 3.6e9,
                                "config": _nemotron_h(
        "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME", 2688, 1856, 32, 64, 128,
        num_key_value_heads=2, n_routed_experts=128, num_experts_per_tok=6, moe_intermediate_size=1856,
        moe_shared_expert_intermediate_size=3712, routed_scaling_factor=2.5, max_position_embeddings=262144)},
    # ---- super / ultra weight classes ---------------------------------------------------------------
    # Nemotron 3 Super: LatentMoE (512 experts top-22 in a 1024-wide latent) and one MTP module ("*E").
    # Shapes: Megatron-Bridge Nemotron3SuperProvider (shared/research/nemotron3-super.md §1.1). The counts
    # (120.67B total, 12.77B active, embeddings and LM head included) equal transformers' on the meta device and
    # leave out the 2.9B-parameter MTP module, as the published 120B / 12.7B do (with it: 123.6B, 3% over).
    "nemotron-3-super-120b-a12b": {"class": "super", "published": 120e9, "published_active": 12.7e9,
                                   "config": _nemotron_h(
        "MEMEMEM*EMEMEMEM*EMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEM*EMEMEMEME", 4096, 2688,
        32, 128, 128, num_key_value_heads=2, n_routed_experts=512, num_experts_per_tok=22,
        moe_intermediate_size=2688, moe_shared_expert_intermediate_size=5376, moe_latent_size=1024,
        routed_scaling_factor=5.0, num_nextn_predict_layers=1, mtp_pattern="*E", max_position_embeddings=262144)},
    "nemotron-h-47b": {"class": "super", "published": 47e9, "config": _nemotron_h(_H_47B, 8192, 30720, 64, 256, 256)},
    "nemotron-h-56b": {"class": "ultra", "published": 56e9, "config": _nemotron_h(_H_56B, 8192, 32768, 64, 256, 256)},
    # ---- tiny CPU presets of the same design ----------------------------------------------------------
    # ~1M parameters: unit tests. Every block kind except E; chunk 16 so short sequences span chunks.
    "hytron-tiny": {"class": "tiny", "config": dict(
        pattern="M-M*-M-", vocab_size=512, hidden_size=128, intermediate_size=384, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, mamba_num_heads=8, mamba_head_dim=16, ssm_state_size=16,
        n_groups=2, chunk_size=16, max_position_embeddings=2048)},
    # same, with MoE blocks (Nemotron 3 Nano design)
    "hytron-tiny-moe": {"class": "tiny", "config": dict(
        pattern="MEM*EM", vocab_size=512, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, mamba_num_heads=8, mamba_head_dim=16, ssm_state_size=16, n_groups=2, chunk_size=16,
        n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=64,
        moe_shared_expert_intermediate_size=128, routed_scaling_factor=2.5, max_position_embeddings=2048)},
    # ~8M parameters: the quickstart model (4k vocab), trains on 2 CPU cores in minutes.
    "hytron-small": {"class": "tiny", "config": dict(
        pattern="M-M-M*-M-M-", vocab_size=4096, hidden_size=256, intermediate_size=768, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, mamba_num_heads=8, mamba_head_dim=32, ssm_state_size=32,
        n_groups=2, chunk_size=64, max_position_embeddings=4096)},
    # ~20M parameters: a bigger laptop model.
    "hytron-base": {"class": "tiny", "config": dict(
        pattern="M-M-M*-M-M-M*-M-", vocab_size=8192, hidden_size=384, intermediate_size=1152,
        num_attention_heads=6, num_key_value_heads=2, head_dim=64, mamba_num_heads=12, mamba_head_dim=32,
        ssm_state_size=64, n_groups=2, chunk_size=64, max_position_embeddings=4096)},
}


def presets_by_class() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, p in PRESETS.items():
        out.setdefault(p["class"], []).append(name)
    return out
