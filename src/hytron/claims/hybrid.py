"""Claim `hybrid`: a hybrid Mamba-2/attention model decodes faster, with less memory, than pure attention.

Nemotron-H reports up to ~3x (8B/47B vs Llama/Qwen) and Nemotron Nano 2 up to 6x higher throughput at
long contexts; the seed claims 6-20x. We compare, at equal parameter count, a hybrid preset with a
pure-attention twin: the same layer pattern with every Mamba-2 block replaced by an attention block and the
MLP width adjusted until the total parameter counts match. For each context length we measure batched
greedy decode steps on a cache that already holds `context` tokens per row (Mamba conv/SSM state and KV
filled with random values: a decode step's cost does not depend on the values, and this skips a long
prefill) and report decode tokens/s and the per-sequence inference state (KV cache + SSM/conv state).
Headline: hybrid / attention decode tokens/s at the longest context, and the memory ratio there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hytron.claims.common import line_plot, write_result
from hytron.model import HybridConfig, HybridLM
from hytron.model.cache import KVState, MambaState


@dataclass
class HybridClaimSettings:
    preset: str = "hytron-small"
    contexts: list[int] = field(default_factory=lambda: [1024, 4096, 16384])
    batch_size: int = 4
    decode_tokens: int = 16
    repeats: int = 3  # median of this many timed decode runs per point
    seed: int = 0


FULL = HybridClaimSettings()
QUICK = HybridClaimSettings(preset="hytron-tiny", contexts=[128, 512], batch_size=2, decode_tokens=4, repeats=1)


def attention_twin(config: HybridConfig) -> HybridConfig:
    """The same pattern with Mamba blocks as attention blocks, MLP width tuned to equal total parameters."""
    pattern = config.pattern.replace("M", "*")
    if "-" not in pattern:
        raise ValueError(f"hybrid claim: pattern {config.pattern!r} has no MLP block to balance parameters with")
    target = config.num_params()
    p = lambda ffn: config.replace(pattern=pattern, intermediate_size=ffn, name=f"{config.name}-attention").num_params()
    a, b = p(64), p(128)
    ffn = max(8, round((64 + (target - a) * 64 / (b - a)) / 8) * 8)
    return config.replace(pattern=pattern, intermediate_size=ffn, name=f"{config.name}-attention")


def filled_cache(model: HybridLM, batch: int, context: int, extra: int, gen: torch.Generator):
    cache = model.new_cache(batch, capacity=context + extra + 1)
    for s in cache.layers:
        if isinstance(s, KVState):
            s.k.normal_(generator=gen)
            s.v.normal_(generator=gen)
        elif isinstance(s, MambaState):
            s.conv.normal_(generator=gen)
            s.ssm.normal_(std=0.1, generator=gen)
    cache.lengths.fill_(context)
    return cache


def state_bytes(cache) -> int:
    """Bytes of a cache's tensors (KV buffers as allocated, i.e. for the context + decoded tokens)."""
    n = 0
    for s in cache.layers:
        if isinstance(s, KVState):
            n += s.k.numel() * s.k.element_size() + s.v.numel() * s.v.element_size()
        elif isinstance(s, MambaState):
            n += s.conv.numel() * s.conv.element_size() + s.ssm.numel() * s.ssm.element_size()
    return n


@torch.inference_mode()
def decode_speed(model: HybridLM, batch: int, context: int, n: int, repeats: int, seed: int) -> dict:
    """Median decode tokens/s (batch * n tokens per run) with `context` tokens already cached per row."""
    gen = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        cache = filled_cache(model, batch, context, n, gen)
        tok = torch.randint(0, model.config.vocab_size, (batch, 1), generator=gen)
        t0 = time.perf_counter()
        for _ in range(n):
            logits = model(tok, cache, last_only=True)
            tok = logits[:, -1].argmax(-1, keepdim=True)
        times.append(time.perf_counter() - t0)
    mem = state_bytes(cache) // batch
    times = sorted(times[1:])
    return {"tok_s": batch * n / times[len(times) // 2], "state_bytes_per_seq": mem,
            "analytic_state_bytes_per_seq": model.config.inference_state_bytes(context, 4, 4)["total"]}


def run(out: str | Path, quick: bool = False, settings: HybridClaimSettings | None = None, log=print) -> dict:
    started = time.perf_counter()
    s = settings or (QUICK if quick else FULL)
    out = Path(out)
    hybrid_cfg = HybridConfig.from_name(s.preset)
    configs = {"hybrid": hybrid_cfg, "attention": attention_twin(hybrid_cfg)}
    models = {}
    for name, cfg in configs.items():
        torch.manual_seed(s.seed)
        models[name] = HybridLM(cfg).eval()
    params = {n: c.num_params() for n, c in configs.items()}
    log(f"hybrid {hybrid_cfg.pattern} {params['hybrid']:,} params vs attention {configs['attention'].pattern} "
        f"{params['attention']:,} params")
    points = {n: [] for n in configs}
    for ctx in s.contexts:
        for name, model in models.items():
            r = decode_speed(model, s.batch_size, ctx, s.decode_tokens, s.repeats, s.seed)
            points[name].append({"context": ctx, **r})
            log(f"  context {ctx:6d} {name:9s} {r['tok_s']:9.1f} tok/s  state {r['state_bytes_per_seq'] / 2**20:8.2f} "
                f"MiB/seq")
    last = s.contexts[-1]
    h, a = points["hybrid"][-1], points["attention"][-1]
    headline = {"metric": f"decode tokens/s hybrid / attention at context {last} (batch {s.batch_size}, equal "
                          "parameters)", "context": last, "decode_speedup": h["tok_s"] / a["tok_s"],
                "memory_ratio": a["state_bytes_per_seq"] / h["state_bytes_per_seq"],
                "speedup_by_context": {p["context"]: p["tok_s"] / q["tok_s"]
                                       for p, q in zip(points["hybrid"], points["attention"])},
                "parameters": params, "patterns": {n: c.pattern for n, c in configs.items()},
                "goal": "decode speedup >= 6x at 16k (seed claim 6-20x)"}
    plots = [
        line_plot(out / "decode_throughput.png", {n: ([p["context"] for p in v], [p["tok_s"] for p in v])
                                                  for n, v in points.items()}, logx=True,
                  xlabel="context length (tokens)", ylabel=f"decode tokens/s (batch {s.batch_size})",
                  title="Hybrid claim: decode throughput vs context (equal parameters)"),
        line_plot(out / "state_memory.png", {n: ([p["context"] for p in v],
                                                 [p["state_bytes_per_seq"] / 2**20 for p in v])
                                             for n, v in points.items()}, logx=True, logy=True,
                  xlabel="context length (tokens)", ylabel="inference state per sequence (MiB)",
                  title="Hybrid claim: KV cache + SSM state per sequence"),
    ]
    return write_result(out, "hybrid", headline, s, s.seed, {"points": points,
                                                             "configs": {n: c.to_dict() for n, c in configs.items()}},
                        plots, started)
