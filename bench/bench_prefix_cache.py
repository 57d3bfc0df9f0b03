"""Benchmark: time to first token with and without the prefix cache for hybrid state (issue 24, item 5).

Two workloads through `hytron.infer.Engine` (what `hytron serve` runs), each request alone in the engine so its
time to first token (arrival to first sampled token) is its prefill; the same requests go to an engine without
the cache (`prefix_cache_bytes=0`) and one with it, interleaved, and every request's greedy tokens are checked
equal between the two:
  (a) shared system prompt: `--shared` tokens of system prompt + `--suffix` tokens of question, `--requests`
      requests (a first one fills the cache and is reported apart: what filling costs);
  (b) a chat: a `--system`-token system prompt, then `--turns` turns of a `--user`-token message and an
      `--answer`-token answer, each turn's prompt the whole conversation so far (as chat clients send it); the
      figure is the last turn's time to first token (issue 24: "turn 5 of a 4k-token conversation"), over
      `--repeats` conversations. Each turn's prompt continues the last turn's prompt and answer token for token
      (a client that sends the history back as text gets this when the text re-tokenizes to the same ids), so
      the cache resumes from the end of the last answer and the last turn prefills its new message.
Random weights (time does not depend on them) of `--preset` (default hytron-small), or `--model DIR`. Medians are
printed, the ratios last, with `os.getloadavg()` before and after (the machine may be shared).

    python bench/bench_prefix_cache.py [--threads 1] [--shared 2048] [--turns 5] [--block 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

from hytron.infer import Engine, SamplingParams
from hytron.model import HybridConfig, HybridLM


def ttft(engine: Engine, prompt: list[int], params: SamplingParams):
    """(seconds to first token, completion) of `prompt` alone in `engine`."""
    req = engine.submit(prompt, params)
    engine.run_until_idle()
    c = req.result()
    return c.first_token_time - c.arrival_time, c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a hytron model directory (default: random weights of --preset)")
    ap.add_argument("--preset", default="hytron-small")
    ap.add_argument("--shared", type=int, default=2048, help="(a) shared system prompt tokens")
    ap.add_argument("--suffix", type=int, default=32, help="(a) question tokens after it")
    ap.add_argument("--requests", type=int, default=5, help="(a) requests measured after the first")
    ap.add_argument("--system", type=int, default=1024, help="(b) system prompt tokens")
    ap.add_argument("--user", type=int, default=200, help="(b) tokens per user message")
    ap.add_argument("--answer", type=int, default=500, help="(b) tokens per answer")
    ap.add_argument("--turns", type=int, default=5, help="(b) turns; the last one's time to first token is measured")
    ap.add_argument("--repeats", type=int, default=3, help="(b) conversations")
    ap.add_argument("--block", type=int, default=128, help="prefix cache block (tokens)")
    ap.add_argument("--cache-mb", type=float, default=512)
    ap.add_argument("--prefill-chunk", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    torch.manual_seed(0)
    if args.model:
        model, source = HybridLM.from_pretrained(args.model).eval(), args.model
    else:
        model, source = HybridLM(HybridConfig.from_name(args.preset)).eval(), f"{args.preset}, random weights"
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)

    def rand(n: int) -> list[int]:
        return torch.randint(0, vocab, (n,), generator=g).tolist()

    conv_len = args.system + args.turns * args.user + (args.turns - 1) * args.answer
    max_len = max(args.shared + args.suffix, conv_len) + args.answer + 16

    def engines():
        return (Engine(model, max_len=max_len, prefill_chunk=args.prefill_chunk),
                Engine(model, max_len=max_len, prefill_chunk=args.prefill_chunk,
                       prefix_cache_bytes=int(args.cache_mb * 2**20), prefix_block_size=args.block))

    same = True

    def both(off: Engine, on: Engine, prompt: list[int], params: SamplingParams, first: int):
        """Times to first token (off, on), measured in the order first=0: off first, 1: on first."""
        nonlocal same
        out = {}
        for which in ((off, on) if first == 0 else (on, off)):
            out[which] = ttft(which, prompt, params)
        (t_off, c_off), (t_on, c_on) = out[off], out[on]
        same = same and c_off.token_ids == c_on.token_ids
        return t_off, t_on, c_on

    # (a) shared system prompt
    off, on = engines()
    short = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
    ttft(off, rand(64), short), ttft(on, rand(64), short)  # warm up both
    system = rand(args.shared)
    fill_off, fill_on, _ = both(off, on, system + rand(args.suffix), short, 0)
    a_off, a_on, cached = [], [], []
    for i in range(args.requests):
        t_off, t_on, c = both(off, on, system + rand(args.suffix), short, i % 2)
        a_off.append(t_off)
        a_on.append(t_on)
        cached.append(c.cached_tokens)
    a = {"off_s": statistics.median(a_off), "on_s": statistics.median(a_on), "fill_off_s": fill_off,
         "fill_on_s": fill_on, "cached_tokens": cached, "prompt_tokens": args.shared + args.suffix}

    # (b) multi-turn chat
    answer = SamplingParams(max_tokens=args.answer, temperature=0, ignore_eos=True)
    b_off, b_on, b_cached, b_len = [], [], [], 0
    for r in range(args.repeats):
        off, on = engines()
        ttft(off, rand(64), short), ttft(on, rand(64), short)
        prompt = rand(args.system) + rand(args.user)
        for turn in range(1, args.turns + 1):
            t_off, t_on, c = both(off, on, prompt, answer, (r + turn) % 2)
            if turn == args.turns:
                b_off.append(t_off)
                b_on.append(t_on)
                b_cached.append(c.cached_tokens)
                b_len = len(prompt)
            prompt = prompt + c.token_ids + rand(args.user)
    b = {"off_s": statistics.median(b_off), "on_s": statistics.median(b_on), "cached_tokens": b_cached,
         "prompt_tokens": b_len}
    load_after = os.getloadavg()

    print(f"model: {source}; {model.num_params():,} params, pattern {model.config.pattern}; fp32, "
          f"{torch.get_num_threads()} threads; prefix cache {args.cache_mb:g} MiB, blocks of {args.block}; "
          f"prefill chunk {args.prefill_chunk}")
    print(f"(a) {args.shared}-token shared system prompt + {args.suffix}-token question ({a['prompt_tokens']} "
          f"tokens), median of {args.requests}: TTFT without cache {a['off_s'] * 1e3:.1f} ms, with cache "
          f"{a['on_s'] * 1e3:.1f} ms (cached tokens {cached}); the first request, filling the cache: "
          f"{fill_off * 1e3:.1f} ms without, {fill_on * 1e3:.1f} ms with")
    print(f"(b) turn {args.turns} of a chat ({args.system}-token system prompt, {args.user}-token messages, "
          f"{args.answer}-token answers; {b_len} prompt tokens), median of {args.repeats}: TTFT without cache "
          f"{b['off_s'] * 1e3:.1f} ms, with cache {b['on_s'] * 1e3:.1f} ms (cached tokens {b_cached})")
    print(f"greedy tokens identical with and without the cache: {same}")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"source": source, "threads": args.threads, "block": args.block, "shared": a, "chat": b,
                       "same_tokens": same, "loadavg": [load_before, load_after]}, f, indent=2)
    print(f"RATIO (a) shared-prompt TTFT without / with prefix cache = {a['off_s'] / a['on_s']:.2f}x")
    print(f"RATIO (b) turn-{args.turns} TTFT without / with prefix cache = {b['off_s'] / b['on_s']:.2f}x")


if __name__ == "__main__":
    main()
