"""Benchmark (b): decode tokens/s and inference memory per sequence, hybrid vs equal-parameter pure attention.

The hybrid is a preset (default hytron-small, pattern M-M-M*-M-M-). The pure-attention twin has every Mamba
block replaced by attention (pattern of `*` and `-` only) and its MLP width adjusted so the non-embedding
parameter counts match (printed). At each context length (1k, 4k, 16k) a batch-1 cache holding that many
tokens is decoded for `--steps` tokens with the same `model(next_token, cache)` call the engine makes.

The cache is filled synthetically (random KV entries and Mamba states, lengths set to the context): a decode
step's cost does not depend on the values, and it spares a 16k-token prefill through six attention layers
on a 2-core CPU. Memory is what the cache actually allocates for one sequence (fp32, KV capacity = context +
steps). `--real-prefill` prefills random tokens instead (slow at 16k). Best of `--repeats`. Ratios
(hybrid / attention) printed last.

    python bench/bench_hybrid.py [--preset hytron-small] [--contexts 1024 4096 16384] [--steps 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hytron.model import HybridConfig, HybridLM
from hytron.model.cache import KVState, MambaState


def attention_twin(cfg: HybridConfig) -> HybridConfig:
    """Same widths, every M replaced by *, MLP width chosen so non-embedding parameters match best."""
    pattern = cfg.pattern.replace("M", "*")
    target = cfg.num_params(embeddings=False)
    best = min(range(16, 8 * cfg.intermediate_size, 16),
               key=lambda w: abs(cfg.replace(pattern=pattern, intermediate_size=w).num_params(embeddings=False)
                                 - target))
    return cfg.replace(pattern=pattern, intermediate_size=best, name=f"{cfg.name}-attention")


@torch.inference_mode()
def prefilled_cache(model: HybridLM, context: int, steps: int, chunk: int = 1024):
    """A real prefill of `context` random tokens, in chunks (the engine's prefill path)."""
    cache = model.new_cache(1, capacity=context + steps)
    ids = torch.randint(16, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    for a in range(0, context, chunk):
        model(ids[:, a:a + chunk], cache, last_only=True)
    return cache


def filled_cache(model: HybridLM, context: int, steps: int):
    cache = model.new_cache(1, capacity=context + steps)
    g = torch.Generator().manual_seed(0)
    for s in cache.layers:
        if isinstance(s, KVState):
            s.k[:, :, :context] = torch.randn(s.k[:, :, :context].shape, generator=g)
            s.v[:, :, :context] = torch.randn(s.v[:, :, :context].shape, generator=g)
        elif isinstance(s, MambaState):
            s.conv.copy_(torch.randn(s.conv.shape, generator=g))
            s.ssm.copy_(0.1 * torch.randn(s.ssm.shape, generator=g))
    cache.lengths[:] = context
    return cache


@torch.inference_mode()
def decode_time(model: HybridLM, cache, context: int, steps: int) -> float:
    cache.lengths[:] = context
    token = torch.tensor([[17]])
    t0 = time.perf_counter()
    for _ in range(steps):
        token = model(token, cache)[:, -1:].argmax(-1)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="hytron-small")
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real-prefill", action="store_true", help="prefill random tokens instead of a synthetic fill")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hcfg = HybridConfig.from_name(args.preset)
    acfg = attention_twin(hcfg)
    models = {"hybrid": HybridLM(hcfg).eval(), "attention": HybridLM(acfg).eval()}
    for name, m in models.items():
        c = m.config
        print(f"{name:9s} {c.pattern:14s} {c.num_params(embeddings=False):>10,} params without embeddings "
              f"(MLP width {c.intermediate_size}), {c.num_params():,} in all")
    print(f"batch 1, {args.steps} decode steps per run, best of {args.repeats}, {torch.get_num_threads()} threads, "
          f"fp32; cache {'prefilled with random tokens' if args.real_prefill else 'filled synthetically'}")
    rows = []
    for ctx in args.contexts:
        row = {"context": ctx}
        for name, m in models.items():
            cache = (prefilled_cache if args.real_prefill else filled_cache)(m, ctx, args.steps)
            decode_time(m, cache, ctx, 2)  # warm-up
            best = min(decode_time(m, cache, ctx, args.steps) for _ in range(args.repeats))
            row[f"{name}_tok_s"] = args.steps / best
            row[f"{name}_bytes"] = cache.memory_bytes()["total"]
            del cache
        rows.append(row)
        print(f"context {ctx:6d}: hybrid {row['hybrid_tok_s']:7.1f} tok/s {row['hybrid_bytes'] / 2**20:8.2f} MiB   "
              f"attention {row['attention_tok_s']:7.1f} tok/s {row['attention_bytes'] / 2**20:8.2f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "attention_pattern": acfg.pattern, "rows": rows}, f, indent=2)
    print("RATIO hybrid/attention: " + "   ".join(
        f"{r['context'] // 1024}k: decode {r['hybrid_tok_s'] / r['attention_tok_s']:.2f}x faster, "
        f"memory {r['attention_bytes'] / r['hybrid_bytes']:.2f}x smaller" for r in rows))


if __name__ == "__main__":
    main()
