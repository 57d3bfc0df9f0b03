"""Benchmark: hytron HybridLM vs transformers NemotronHForCausalLM on the same random ~5M-param model (CPU).

Measures, in one run and interleaved (these machines are shared and noisy):
  1. training tokens/s (forward + backward + AdamW step; `--optim`, the same AdamW for both), and hytron's MFU
     against this machine's fp32 matmul peak, measured between the steps (the best of all rounds); MFU is given
     for the median step and for the fastest one (a step the load did not reach; `--compile` adds a third model,
     hytron with `compile_blocks`);
  2. batch-1 greedy decode tokens/s: hytron's cached decode loop vs transformers' `generate`.
With `--profile`, one hytron training step is also profiled (torch.profiler) per op kind and per op, with the
share of the step spent in GEMMs. Ratios (hytron / transformers) are printed last, with the load average.

    python bench/bench_model.py [--preset hytron-small] [--seq 256] [--batch 8] [--steps 6] [--new-tokens 128]
                                [--profile]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time

import torch

from hytron.model import HybridConfig, HybridLM
from peak_profile import by_kind, load, matmul_peak_flops, print_table, profile_ops


def train_step_time(model, ids, labels_fn, opt) -> float:
    t0 = time.perf_counter()
    loss = labels_fn(model, ids)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="hytron-small")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="print per-op tables of one hytron training step")
    ap.add_argument("--optim", choices=("fused", "foreach", "for-loop"), default="fused",
                    help="AdamW implementation, the same for both models: fused (hytron's make_optimizer and "
                         "transformers' Trainer default since torch 2.8), foreach, or torch's CPU default for-loop")
    ap.add_argument("--compile", action="store_true",
                    help="also train a copy of hytron's model with its blocks compiled (`compile_blocks`, as "
                         "`TrainConfig.compile`), interleaved with the other two; its compile time is printed")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = HybridConfig.from_name(args.preset)
    ours = HybridLM(cfg)
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa")
    print(f"model {args.preset}: {ours.num_params():,} params, pattern {cfg.pattern}, "
          f"batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads, AdamW {args.optim}")

    # ---- 1. training throughput ------------------------------------------------------------------------
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1))
    ours_loss = lambda m, x: m.loss(x[:, :-1], x[:, 1:])  # noqa: E731
    theirs_loss = lambda m, x: m(input_ids=x[:, :-1], labels=x[:, :-1], use_cache=False).loss  # noqa: E731
    ours.train()
    theirs.train()
    okw = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[args.optim]
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4, **okw)
    opt_t = torch.optim.AdamW(theirs.parameters(), lr=1e-4, **okw)
    compiled = None
    if args.compile:
        from hytron.model.kernels import compile_blocks

        compiled = compile_blocks(copy.deepcopy(ours))
        opt_c = torch.optim.AdamW(compiled.parameters(), lr=1e-4, **okw)
        t0 = time.perf_counter()
        train_step_time(compiled, ids, ours_loss, opt_c)
        print(f"compiled blocks: first step (compiling forward and backward) {time.perf_counter() - t0:.1f} s")
    for _ in range(2):  # warm-up
        train_step_time(ours, ids, ours_loss, opt_o)
        train_step_time(theirs, ids, theirs_loss, opt_t)
        if compiled is not None:
            train_step_time(compiled, ids, ours_loss, opt_c)
    # each round: one step of each model, then the GEMM peak (best of 3), so that the peak is measured beside
    # the steps (a shared machine's load comes and goes); the peak is the best of all rounds
    to, tt, tc, peaks = [], [], [], []
    for _ in range(args.steps):
        to.append(train_step_time(ours, ids, ours_loss, opt_o))
        tt.append(train_step_time(theirs, ids, theirs_loss, opt_t))
        if compiled is not None:
            tc.append(train_step_time(compiled, ids, ours_loss, opt_c))
        peaks.append(matmul_peak_flops(reps=3))
    tokens = args.batch * args.seq
    tps_o, tps_t = tokens / statistics.median(to), tokens / statistics.median(tt)
    tps_c = tokens / statistics.median(tc) if tc else None
    peak = max(peaks)
    fpt = ours.flops_per_token(args.seq)
    mfu, mfu_best = fpt * tps_o / peak, fpt * tokens / min(to) / peak
    print(f"train   hytron {tps_o:9.0f} tok/s   transformers {tps_t:9.0f} tok/s   (medians of {args.steps} "
          f"interleaved steps; {load()})")
    print(f"        matmul peak {peak / 1e9:.1f} GFLOP/s fp32 (best of {3 * len(peaks)}, rounds' median "
          f"{statistics.median(peaks) / 1e9:.1f}); hytron model FLOPs/token {fpt / 1e6:.1f}M -> MFU "
          f"{100 * mfu:.1f}% (fastest step: {tokens / min(to):.0f} tok/s, MFU {100 * mfu_best:.1f}%; transformers' "
          f"fastest {tokens / min(tt):.0f} tok/s)")
    mfu_c = None
    if tps_c is not None:
        mfu_c = fpt * tps_c / peak
        print(f"        hytron compiled blocks {tps_c:9.0f} tok/s -> MFU {100 * mfu_c:.1f}% (fastest step "
              f"{tokens / min(tc):.0f} tok/s, MFU {100 * fpt * tokens / min(tc) / peak:.1f}%), {tps_c / tps_o:.2f}x "
              f"eager, {tps_c / tps_t:.2f}x transformers ({load()})")
    gemm_share = None
    if args.profile:
        rows, wall = profile_ops(lambda: train_step_time(ours, ids, ours_loss, opt_o), reps=5)
        kinds = by_kind(rows)
        gemm_share = sum(k["ms"] for k in kinds if k["kind"] == "GEMM") / sum(k["ms"] for k in kinds)
        print(f"hytron training step by op kind ({wall * 1e3:.0f} ms per step under the profiler; GEMM share "
              f"{100 * gemm_share:.1f}%; {load()}):")
        print_table(kinds, peak, key="kind")
        print("by op:")
        print_table(rows, peak, top=20)

    # ---- 2. batch-1 greedy decode ------------------------------------------------------------------------
    # training moved the two copies apart by rounding differences; decode from identical weights again
    ours.eval()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()
    prompt = torch.randint(3, cfg.vocab_size, (1, 16))

    @torch.no_grad()
    def ours_decode():
        cache = ours.new_cache(1, capacity=prompt.size(1) + args.new_tokens)
        logits = ours(prompt, cache, last_only=True)
        out = []
        for _ in range(args.new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
            logits = ours(nxt, cache)
        return torch.cat(out, 1)

    @torch.no_grad()
    def theirs_decode():
        return theirs.generate(prompt, max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None,
                               pad_token_id=0)[:, prompt.size(1):]

    ours_decode()
    theirs_decode()
    do, dt_ = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        a = ours_decode()
        do.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = theirs_decode()
        dt_.append(time.perf_counter() - t0)
    same = torch.equal(a, b)
    dec_o, dec_t = args.new_tokens / min(do), args.new_tokens / min(dt_)
    print(f"decode  hytron {dec_o:9.0f} tok/s   transformers generate {dec_t:9.0f} tok/s   "
          f"(same greedy tokens: {same})")

    result = {"preset": args.preset, "optim": args.optim, "train_tok_s": {"hytron": tps_o, "transformers": tps_t},
              "mfu": mfu, "matmul_peak_gflops": peak / 1e9, "gemm_share_of_step": gemm_share, "load": load(),
              "decode_tok_s": {"hytron": dec_o, "transformers": dec_t}, "same_tokens": same,
              "train_ratio": tps_o / tps_t, "decode_ratio": dec_o / dec_t, "train_tok_s_compiled": tps_c,
              "mfu_fastest_step": mfu_best, "mfu_compiled": mfu_c,
              "train_step_s": {"hytron": to, "transformers": tt, "compiled": tc},
              "peaks_gflops": [p / 1e9 for p in peaks]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(f"RATIO train tokens/s hytron/transformers = {tps_o / tps_t:.2f}x   MFU = {100 * mfu:.1f}%   "
          f"decode tokens/s hytron/transformers = {dec_o / dec_t:.2f}x   ({load()})")


if __name__ == "__main__":
    main()
