"""Benchmark: Mamba-2 prefill against the measured fp32 GEMM peak, and hybrid vs attention-twin prefill (issue 27).

The model pair is the hybrid claim's (`hytron.claims.hybrid`: the Nemotron-H-8B-pattern hybrid at reduced width
and its equal-parameter attention-only twin), prefilled as the claim does (`prefill_seconds`: batch 1, chunks of
`prefill_chunk` tokens through the cache). Measures, in one run, at each thread count:
  1. the fp32 GEMM peak (a 1536^3 matmul, best of 8);
  2. the chunked SSD scan (`ssd_chunked`) and one Mamba-2 block at the claim's prefill shape (batch 1, one
     chunk of `prefill_chunk` tokens): time, executed FLOPs (the scan's batched matmuls at its chunk length; the
     block adds in_proj, conv1d and out_proj), GFLOP/s and % of the GEMM peak, with a per-op table;
  3. prefill tokens/s of both models at each context, interleaved (alternating which goes first), median of
     `--reps`, and a per-op-kind table of one hybrid prefill at the longest context (first thread count).
Ratios (hybrid / attention prefill tokens/s; scan and block GFLOP/s / GEMM peak) are printed last, each with the
load average measured beside it (the machine is shared).

    python bench/bench_prefill.py [--threads 1 2] [--contexts 2048 8192] [--reps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

from hytron.claims.hybrid import FULL, attention_twin, hybrid_config, prefill_seconds
from hytron.model import HybridLM
from hytron.model.ssd import MAX_SCAN_CHUNK, ssd_chunked
from peak_profile import by_kind, load, matmul_peak_flops, print_table, profile_ops


def ssd_flops(b: int, L: int, H: int, P: int, G: int, N: int, chunk: int) -> float:
    """FLOPs of the chunked scan's matmuls at chunk length Q: C·Bᵀ per group, the masked (Q x Q) @ (Q x P) per
    head, chunk states, the carry across chunks ((c+1) x (c+1) per head) and the carried-in state's output."""
    Q = min(chunk, MAX_SCAN_CHUNK)
    c = math.ceil(L / Q)
    return 2.0 * b * (G * c * Q * Q * N + H * c * Q * Q * P + 2 * H * c * Q * P * N + H * (c + 1) ** 2 * P * N)


def block_flops(mixer, b: int, L: int) -> float:
    """A Mamba-2 block's FLOPs: in_proj, depthwise conv, the scan and out_proj (elementwise work not counted)."""
    d = mixer.in_proj.in_features
    proj = 2.0 * b * L * d * (mixer.in_proj.out_features + mixer.d_inner)
    conv = 2.0 * b * L * mixer.conv_dim * mixer.kernel
    return proj + conv + ssd_flops(b, L, mixer.heads, mixer.head_dim, mixer.groups, mixer.state_size,
                                   mixer.chunk_size)


def best_seconds(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-profile", action="store_true", help="skip the per-op tables")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    s = FULL
    configs = {"hybrid": hybrid_config(s)}
    configs["attention"] = attention_twin(configs["hybrid"])
    models = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        models[name] = HybridLM(cfg).eval()
    print(f"hybrid {configs['hybrid'].pattern} ({models['hybrid'].num_params():,} params) vs attention twin "
          f"({models['attention'].num_params():,} params); prefill batch {s.prefill_batch}, chunks of "
          f"{s.prefill_chunk} tokens")
    Lc = s.prefill_chunk
    mixer = next(b.mixer for b in models["hybrid"].backbone.layers if b.kind == "M")
    H, P, G, N = mixer.heads, mixer.head_dim, mixer.groups, mixer.state_size
    g = torch.Generator().manual_seed(0)
    x, B, C = (torch.randn(1, Lc, *shape, generator=g) for shape in ((H, P), (G, N), (G, N)))
    dt, A = F.softplus(torch.randn(1, Lc, H, generator=g) - 4), -torch.exp(mixer.A_log.detach())
    u = torch.randn(1, Lc, mixer.in_proj.in_features, generator=g)
    state = models["hybrid"].new_cache(1, capacity=1).layers[0]
    scan = lambda: ssd_chunked(x, dt, A, B, C, mixer.chunk_size)  # noqa: E731
    block = lambda: mixer(u, state)  # noqa: E731
    f_scan, f_block = ssd_flops(1, Lc, H, P, G, N, mixer.chunk_size), block_flops(mixer, 1, Lc)

    longest = max(args.contexts)
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        res = {"threads": threads, "prefill_tok_s": {}}
        peak = matmul_peak_flops()
        res["gemm_peak_gflops"], res["load_peak"] = peak / 1e9, load()
        print(f"\n== {threads} thread(s): fp32 GEMM peak {peak / 1e9:.1f} GFLOP/s ({res['load_peak']})")
        with torch.inference_mode():
            for name, fn, flops in (("ssd_scan", scan, f_scan), ("mamba_block", block, f_block)):
                sec = best_seconds(fn, 10)
                res[name] = {"ms": sec * 1e3, "gflops": flops / sec / 1e9, "pct_peak": 100 * flops / sec / peak,
                             "flops": flops, "load": load()}
                print(f"{name:12s} (b=1, L={Lc}, H={H}, P={P}, G={G}, N={N}, chunk {mixer.chunk_size}): "
                      f"{sec * 1e3:.3f} ms, {flops / 1e6:.1f} MFLOP -> {flops / sec / 1e9:.1f} GFLOP/s = "
                      f"{100 * flops / sec / peak:.1f}% of the GEMM peak ({res[name]['load']})")
                if not args.no_profile:
                    rows, _ = profile_ops(fn, reps=15)
                    print_table(rows, peak)
        for ctx in args.contexts:
            times = {n: [] for n in models}
            for r in range(args.reps):
                for name in (list(models) if r % 2 == 0 else reversed(list(models))):
                    times[name].append(prefill_seconds(models[name], s.prefill_batch, ctx, s.prefill_chunk,
                                                       torch.Generator().manual_seed(r)))
            tok_s = {n: ctx * s.prefill_batch / statistics.median(t) for n, t in times.items()}
            res["prefill_tok_s"][ctx] = {**tok_s, "ratio": tok_s["hybrid"] / tok_s["attention"], "load": load()}
            print(f"prefill {ctx:6d} tokens: hybrid {tok_s['hybrid']:7.0f} tok/s, attention {tok_s['attention']:7.0f}"
                  f" tok/s -> {tok_s['hybrid'] / tok_s['attention']:.2f}x ({load()})")
        if not args.no_profile and threads == args.threads[0]:
            rows, wall = profile_ops(lambda: prefill_seconds(models["hybrid"], 1, longest, s.prefill_chunk,
                                                             torch.Generator().manual_seed(0)), reps=3)
            print(f"hybrid prefill of {longest} tokens by op kind ({wall:.2f} s under the profiler):")
            print_table(by_kind(rows), peak, key="kind")
        results.append(res)

    print()
    for res in results:
        print(f"RATIO {res['threads']} thread(s): SSD scan {res['ssd_scan']['pct_peak']:.1f}% and Mamba block "
              f"{res['mamba_block']['pct_peak']:.1f}% of the GEMM peak ({res['gemm_peak_gflops']:.0f} GFLOP/s); "
              + "  ".join(f"prefill hybrid/attention at {ctx}: {v['ratio']:.2f}x"
                          for ctx, v in res["prefill_tok_s"].items()) + f"  ({load()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
