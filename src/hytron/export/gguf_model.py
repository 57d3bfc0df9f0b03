"""`hytron export gguf`: a Nemotron-H model directory as one GGUF file that llama.cpp loads.

Written with the `gguf` package (llama.cpp's own writer library) to what llama.cpp's `nemotron_h` and
`nemotron_h_moe` loaders read (src/models/nemotron-h.cpp in llama.cpp, as shipped in llama-cpp-python 0.3.36):
- a block's kind is not stored by name: a layer is Mamba-2 iff its `attention.head_count_kv` and
  `feed_forward_length` entries are both 0, attention iff only `feed_forward_length` is 0, otherwise an MLP or
  MoE block, so both keys are per-layer arrays;
- A is stored as `A = -exp(A_log)` with shape (H, 1), D as (H, 1), the depthwise conv as (channels, kernel) and
  the gated norm's weight as (groups, d_inner / groups), the grouping llama.cpp normalises over;
- routed experts are stacked into one (experts, out, in) tensor per projection; the router is a sigmoid with a
  score-correction bias (`exp_probs_b`), top-k, optional renormalisation and `routed_scaling_factor`;
- LatentMoE (Nemotron 3 Super): `moe_latent_size` and per MoE block `ffn_latent_down` (fc1_latent_proj) and
  `ffn_latent_up` (fc2_latent_proj), which that llama.cpp reads (logits equal hytron's, tests/export);
- the MTP head (`mtp.*`) is not written, and `mtp_not_written` says why in one line: that llama.cpp has no MTP
  graph for dense `nemotron_h`, and its `nemotron_h_moe` MTP graph normalises the head's output with LayerNorm
  (the head's final_layernorm is an RMSNorm) and runs the head's experts without LatentMoE projections, so
  hytron's head would draft differently there. The file is the main model, which llama.cpp runs exactly.
Attention has no position encoding in Nemotron-H, so Q/K need no RoPE permutation. Norms, biases, A, D, the
conv and the router stay float32 in every outtype, as llama.cpp's converter keeps them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hytron.export.gguf_vocab import read_vocab
from hytron.model.config import HybridConfig

OUTTYPES = ("f32", "f16", "bf16", "q8_0")


def _check_supported(c: HybridConfig, source: str) -> None:
    if "E" in c.pattern and "-" in c.pattern:
        raise ValueError(f"{source}: pattern mixes MLP (-) and MoE (E) blocks; llama.cpp's nemotron_h_moe "
                         "treats every feed-forward block as MoE")
    if "E" in c.pattern and c.n_shared_experts != 1:
        raise ValueError(f"{source}: n_shared_experts={c.n_shared_experts}; llama.cpp's nemotron_h_moe needs "
                         "exactly one shared expert")
    if "E" in c.pattern and c.n_group > 1:
        raise ValueError(f"{source}: n_group={c.n_group} (grouped expert routing) is not implemented by "
                         "llama.cpp's nemotron_h_moe")


def mtp_not_written(c: HybridConfig) -> str | None:
    """One line saying why the model's MTP head is left out of the GGUF file (None: the model has none)."""
    if not c.num_nextn_predict_layers:
        return None
    head = f"MTP head ({c.mtp_pattern!r}) not written to the GGUF file"
    pinned = "the pinned llama.cpp (llama-cpp-python 0.3.36)"
    if "E" not in c.pattern:
        return f"{head}: {pinned} has no MTP graph for dense nemotron_h models; the file is the main model only"
    return (f"{head}: {pinned} ends a nemotron_h_moe MTP head with LayerNorm where it has RMSNorm "
            "(final_layernorm) and runs it as one '*E' block without LatentMoE projections, so it would draft "
            "differently; the file is the main model only")


def _hparams(w, c: HybridConfig) -> None:
    """Architecture keys; `w` is a gguf.GGUFWriter whose arch is nemotron_h or nemotron_h_moe."""
    moe = "E" in c.pattern
    n = c.num_layers
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(n)
    w.add_vocab_size(c.vocab_size)
    ff = {"-": c.intermediate_size, "E": c.moe_intermediate_size}
    w.add_feed_forward_length([ff.get(ch, 0) for ch in c.pattern])
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv([c.num_key_value_heads if ch == "*" else 0 for ch in c.pattern])
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_layer_norm_eps(c.norm_eps)
    w.add_rope_scaling_finetuned(False)
    w.add_ssm_conv_kernel(c.conv_kernel)
    w.add_ssm_state_size(c.ssm_state_size)
    w.add_ssm_group_count(c.n_groups)
    w.add_ssm_inner_size(c.mamba_inner)
    w.add_ssm_time_step_rank(c.mamba_num_heads)  # llama.cpp reads the number of SSM heads from this key
    if moe:
        w.add_expert_count(c.n_routed_experts)
        w.add_expert_used_count(c.num_experts_per_tok)
        w.add_expert_feed_forward_length(c.moe_intermediate_size)
        w.add_expert_shared_feed_forward_length(c.moe_shared_expert_intermediate_size)
        w.add_expert_shared_count(c.n_shared_experts)
        w.add_expert_weights_norm(c.norm_topk_prob)
        w.add_expert_weights_scale(c.routed_scaling_factor)
        w.add_expert_group_count(c.n_group)
        if c.moe_latent_size is not None:  # LatentMoE: routed experts run in the latent width
            w.add_moe_latent_size(c.moe_latent_size)


def _gguf_tensors(state: dict[str, torch.Tensor], c: HybridConfig) -> list[tuple[str, np.ndarray, bool]]:
    """(GGUF name, float32 array in llama.cpp's layout, may be quantized) for every tensor of the model."""
    out = [("token_embd.weight", state["backbone.embeddings.weight"], True),
           ("output_norm.weight", state["backbone.norm_f.weight"], False),
           ("output.weight", state["lm_head.weight"], True)]
    for i, ch in enumerate(c.pattern):
        p, b = f"backbone.layers.{i}.", f"blk.{i}."
        out.append((b + "attn_norm.weight", state[p + "norm.weight"], False))  # every block's pre-norm
        m = p + "mixer."
        if ch == "M":
            A = -torch.exp(state[m + "A_log"].float())
            out += [(b + "ssm_in.weight", state[m + "in_proj.weight"], True),
                    (b + "ssm_conv1d.weight", state[m + "conv1d.weight"].squeeze(1), False),  # (C, 1, K) -> (C, K)
                    (b + "ssm_dt.bias", state[m + "dt_bias"], False),
                    (b + "ssm_a", A.reshape(-1, 1), False),
                    (b + "ssm_d", state[m + "D"].reshape(-1, 1), False),
                    (b + "ssm_norm.weight", state[m + "norm.weight"].reshape(c.n_groups, -1), False),
                    (b + "ssm_out.weight", state[m + "out_proj.weight"], True)]
            if m + "conv1d.bias" in state:
                out.append((b + "ssm_conv1d.bias", state[m + "conv1d.bias"], False))
        elif ch == "*":
            out += [(b + f"attn_{x}.weight", state[m + f"{x}_proj.weight"], True) for x in "qkv"]
            out.append((b + "attn_output.weight", state[m + "o_proj.weight"], True))
        elif ch == "-":
            out += [(b + "ffn_up.weight", state[m + "up_proj.weight"], True),
                    (b + "ffn_down.weight", state[m + "down_proj.weight"], True)]
        elif ch == "E":
            out += [(b + "ffn_gate_inp.weight", state[m + "gate.weight"], False),
                    (b + "exp_probs_b.bias", state[m + "gate.e_score_correction_bias"], False),
                    (b + "ffn_up_exps.weight", state[m + "experts.up_proj"], True),  # (E, f, d)
                    (b + "ffn_down_exps.weight", state[m + "experts.down_proj"], True),  # (E, d, f)
                    (b + "ffn_up_shexp.weight", state[m + "shared_experts.up_proj.weight"], True),
                    (b + "ffn_down_shexp.weight", state[m + "shared_experts.down_proj.weight"], True)]
            if c.moe_latent_size is not None:  # z = fc1(u) into the latent, the experts' sum back by fc2
                out += [(b + "ffn_latent_down.weight", state[m + "fc1_latent_proj.weight"], True),
                        (b + "ffn_latent_up.weight", state[m + "fc2_latent_proj.weight"], True)]
    return [(name, t.detach().float().cpu().numpy(), q) for name, t, q in out]


def _encode(gguf, data: np.ndarray, outtype: str, quantizable: bool):
    """(array, ggml type) for one tensor; q8_0 falls back to f16 for rows not a multiple of its block (32)."""
    Q = gguf.GGMLQuantizationType
    if not quantizable or outtype == "f32" or data.ndim < 2:
        return data.astype(np.float32), Q.F32
    qtype = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[outtype]
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:
        return gguf.quants.quantize(data, Q.F16), Q.F16


def export_gguf(model_dir: str | Path, out: str | Path, outtype: str = "f32") -> Path:
    """Write `out` (a .gguf file) from a Nemotron-H model directory (config.json, safetensors, tokenizer)."""
    import gguf  # the `gguf` extra; the CLI turns its absence into a one-line error naming the extra

    from hytron.model.hf import load_pretrained
    from hytron.model.hybrid import HybridLM

    if outtype not in OUTTYPES:
        raise ValueError(f"--outtype must be one of {', '.join(OUTTYPES)}, got {outtype!r}")
    model_dir, out = Path(model_dir), Path(out)
    model = load_pretrained(HybridLM, model_dir)  # validates config and every tensor shape first
    c = model.config
    _check_supported(c, str(model_dir / "config.json"))
    vocab = read_vocab(model_dir, c.vocab_size)
    arch = gguf.MODEL_ARCH.NEMOTRON_H_MOE if "E" in c.pattern else gguf.MODEL_ARCH.NEMOTRON_H
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_name(c.name or model_dir.name)
        writer.add_file_type(file_type)
        _hparams(writer, c)
        vocab.write(writer)
        for name, data, quantizable in _gguf_tensors(model.state_dict(), c):
            array, qtype = _encode(gguf, data, outtype, quantizable)
            writer.add_tensor(name, array, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    tmp.replace(out)  # only a complete file ever has the requested name
    return out
