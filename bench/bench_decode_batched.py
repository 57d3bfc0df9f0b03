"""Benchmark: the compiled batched decode step (`kernels.StaticDecoder`, what `hytron serve` runs for 2+ rows), with
and without the weight-major products (`kernels._weight_major_pass`: x·Wᵀ computed as (W·xᵀ)ᵀ), side by side in
one process (issue 27).

Both variants compile the same function over caches prefilled with the same tokens, then alternate: each round
times `--steps` steps of one, then of the other, so drift in the machine's load hits both alike. Prints the
logits' largest difference (the two must agree to fp32 rounding) and the median per-round ratio with, in
parentheses, its quartiles. `hytron serve` runs every product weight-major with more than one thread, and at one
thread those with a weight of `kernels.WEIGHT_MAJOR_MIN_ROWS_1T` rows or more (a real vocabulary's LM head).

    python bench/bench_decode_batched.py [--preset hytron-small] [--vocab 4096] [--batch 16 4] [--threads 1 2]
                                         [--rounds 12] [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from hytron.model import HybridConfig, HybridLM, kernels


def compare(model: HybridLM, batch: int, rounds: int, steps: int, variants: dict, prompt: int = 50) -> tuple[
        dict, float]:
    """Per-step milliseconds of each variant (name -> inductor options), one list per variant, alternating
    rounds; and the largest logit difference from the first variant."""
    fns = {name: torch.compile(kernels._decode_window, options=opts) for name, opts in variants.items()}
    vocab = model.config.vocab_size
    prefix = torch.randint(3, vocab, (batch, prompt), generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(3, vocab, (batch, 1), generator=torch.Generator().manual_seed(1))
    windows = torch.empty(prompt + steps + 8)
    runs, first, diff = {}, None, 0.0
    for name, fn in fns.items():
        cache = model.new_cache(batch, capacity=1 << (prompt + steps + 8).bit_length())
        model(prefix, cache)
        kernels._mark_dynamic(cache, tokens)
        window = windows[:prompt + 1]
        torch._dynamo.mark_dynamic(window, 0)
        out = fn(model, cache, tokens, window).clone()
        if first is None:
            first = out
        diff = max(diff, (out - first).abs().max().item())
        runs[name] = (fn, cache)
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, cache) in runs.items():
            cache.lengths.fill_(prompt)  # every round decodes the same positions (the Mamba state drifts: no matter)
            t0 = time.perf_counter()
            for j in range(steps):
                fn(model, cache, tokens, windows[:prompt + 1 + j])
            times[name].append((time.perf_counter() - t0) / steps * 1000)
    return times, diff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="hytron-small")
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 4])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary size (the quickstart's tokenizer: 4096)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = HybridLM(HybridConfig.from_name(args.preset, vocab_size=args.vocab)).eval()
    print(f"model {args.preset}: {model.num_params():,} params; compiled batched decode step: plain products vs all "
          f"weight-major vs what hytron serve runs; {args.rounds} alternating rounds of {args.steps} steps")
    base = kernels.CPU_COMPILE_OPTIONS
    for threads in args.threads:
        torch.set_num_threads(threads)
        served = 0 if threads > 1 else kernels.WEIGHT_MAJOR_MIN_ROWS_1T
        variants = {"plain": base, "all weight-major": {
            **base, "post_grad_custom_pre_pass": kernels._weight_major_pass()}}
        if served:
            variants[f"weight-major from {served} rows (served)"] = {
                **base, "post_grad_custom_pre_pass": kernels._weight_major_pass(served)}
        for batch in args.batch:
            torch._dynamo.reset()  # compiled for this thread count (inductor's kernels keep the count built for)
            load = os.getloadavg()[0]
            with torch.inference_mode():
                times, diff = compare(model, batch, args.rounds, args.steps, variants)
            plain = times["plain"]
            print(f"batch {batch}, {threads} thread(s): plain {statistics.median(plain):.3f} ms a step; logits "
                  f"differ by at most {diff:.1e}; load {load:.2f}")
            for name, ts in list(times.items())[1:]:
                ratios = [b / a for a, b in zip(plain, ts)]
                q = statistics.quantiles(ratios, n=4)
                print(f"RATIO {name} / plain step time, batch {batch}, {threads} thread(s): "
                      f"{statistics.median(ratios):.2f}x ({q[0]:.2f}-{q[2]:.2f})")


if __name__ == "__main__":
    main()
