"""Model verbs: `hytron model-info` (sizes and inference memory of presets or model dirs) and `hytron demo`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "B" if not unit else "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _bytes(n: int) -> str:
    for div, suffix in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n} B"


def add_model_info(sub) -> None:
    p = sub.add_parser("model-info", help="parameters, layer pattern and inference memory of a preset or model dir")
    p.add_argument("name", nargs="?", help="preset name or Nemotron-H model directory (omit to list presets)")
    p.add_argument("--context", type=int, default=8192, help="context length for the memory estimate")
    p.add_argument("--dtype-bytes", type=int, default=2, help="bytes per weight and KV/conv element (2 = bf16)")
    p.set_defaults(func=cmd_model_info)


def cmd_model_info(args: argparse.Namespace) -> int:
    from hytron.model import PRESETS, HybridConfig, presets_by_class
    from hytron.model.hf import load_config

    if not args.name:
        for cls, names in presets_by_class().items():
            print(f"{cls}:")
            for n in names:
                c = HybridConfig.from_name(n)
                print(f"  {n:26s} {_human(c.num_params()):>8s} params  {c.num_layers:3d} layers  {c.pattern}")
        return 0
    if args.context <= 0:
        raise ValueError(f"--context must be positive, got {args.context}")
    cfg = load_config(args.name) if Path(args.name).is_dir() else HybridConfig.from_name(args.name)
    counts = cfg.block_counts()
    total, active = cfg.num_params(), cfg.num_params(active=True)
    weight_class = f"  ({PRESETS[cfg.name]['class']} class)" if cfg.name in PRESETS else ""
    print(f"model        {cfg.name or args.name}{weight_class}")
    print(f"parameters   {total:,} total ({_human(total)}), {active:,} active per token ({_human(active)})")
    print(f"             {cfg.num_params(embeddings=False):,} without embeddings and LM head")
    print(f"pattern      {cfg.pattern}")
    print(f"blocks       {cfg.num_layers}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    print(f"widths       hidden {cfg.hidden_size}, vocab {cfg.vocab_size}, mamba {cfg.mamba_num_heads}x"
          f"{cfg.mamba_head_dim} (state {cfg.ssm_state_size}, groups {cfg.n_groups}), attention "
          f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} heads x {cfg.head_dim}")
    if "E" in cfg.pattern + cfg.mtp_pattern:
        latent = f", in a {cfg.moe_latent_size}-wide latent (LatentMoE)" if cfg.moe_latent_size else ""
        print(f"experts      {cfg.n_routed_experts} routed x {cfg.moe_intermediate_size}, top {cfg.num_experts_per_tok}"
              f"{latent}; shared {cfg.moe_shared_expert_intermediate_size}")
    if cfg.num_nextn_predict_layers:
        n = cfg.mtp_params()
        print(f"MTP head     {cfg.num_nextn_predict_layers} x '{cfg.mtp_pattern}', {n:,} params ({_human(n)}), "
              "not in the totals above")
    weights = cfg.num_params(mtp=True) * args.dtype_bytes
    print(f"weights      {_bytes(weights)} at {args.dtype_bytes} bytes per parameter"
          f"{' (MTP head included)' if cfg.num_nextn_predict_layers else ''}")
    mem = cfg.inference_state_bytes(args.context, bytes_per_el=args.dtype_bytes)
    print(f"inference memory per sequence at {args.context:,} tokens:")
    print(f"  KV cache   {_bytes(mem['kv_cache']):>12s}  (grows with context)")
    print(f"  SSM state  {_bytes(mem['ssm_state']):>12s}  (constant, fp32)")
    print(f"  conv state {_bytes(mem['conv_state']):>12s}  (constant)")
    print(f"  total      {_bytes(mem['total']):>12s}")
    if cfg.num_nextn_predict_layers:
        print(f"  + MTP head {_bytes(mem['mtp_state']):>12s}  (its own blocks' state, when it drafts tokens)")
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="smoke demo: build a tiny hybrid, decode with its cache, save and reload it")
    p.add_argument("--out", default="out/demo-model", help="where to write the Nemotron-H model directory")
    p.add_argument("--preset", default="hytron-tiny")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    import torch

    from hytron.model import HybridConfig, HybridLM

    torch.manual_seed(0)
    model = HybridLM(HybridConfig.from_name(args.preset)).eval()
    print(f"built {args.preset}: {model.num_params():,} parameters, pattern {model.config.pattern}")
    ids = torch.randint(0, model.config.vocab_size, (1, 64))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(1)
        steps = [model(ids[:, :32], cache)] + [model(ids[:, t:t + 1], cache) for t in range(32, 64)]
        err = (torch.cat(steps, 1) - full).abs().max().item()
        print(f"prefill 32 + 32 cached decode steps vs full forward: max |Δlogit| = {err:.2e}")
        t0 = time.perf_counter()
        tok = ids[:, -1:]
        for _ in range(64):
            tok = model(tok, cache).argmax(-1)
        dt = time.perf_counter() - t0
        print(f"greedy decode: {64 / dt:.0f} tokens/s (batch 1, CPU, random weights)")
    path = model.save_pretrained(args.out)
    again = HybridLM.from_pretrained(path)
    with torch.no_grad():
        same = torch.equal(again(ids), full)
    print(f"saved Nemotron-H format to {path} (config.json + model.safetensors); reload identical: {same}")
    print("load it in transformers: AutoModelForCausalLM.from_pretrained(path)")
    return 0 if same and err < 1e-4 else 1
