"""Benchmark (c): batch-1 greedy decode through hytron's serving engine vs transformers `generate`, same checkpoint.

One random model (preset, default hytron-small) is saved in the Nemotron-H format and loaded by both:
`hytron.infer.Engine` (what `hytron serve` runs: scheduler, sampling, text release) and transformers'
`NemotronHForCausalLM.generate` (its own cache). Runs are interleaved and the best of `--repeats` is kept
(the machine is shared). Checks the two produce the same greedy tokens. Ratio printed last.

    python bench/bench_decode.py [--preset hytron-small] [--prompt 64] [--new-tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from hytron.infer import Engine, SamplingParams
from hytron.model import HybridConfig, HybridLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="hytron-small")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = HybridConfig.from_name(args.preset)
    with tempfile.TemporaryDirectory() as d:
        HybridLM(cfg).save_pretrained(d)
        ours = HybridLM.from_pretrained(d).eval()
        theirs = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    prompt = torch.randint(16, cfg.vocab_size, (1, args.prompt))
    engine = Engine(ours, max_slots=1)
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0, ignore_eos=True)

    def run_ours():
        req = engine.submit(prompt[0].tolist(), params)
        engine.run_until_idle()
        return req.result().token_ids

    @torch.no_grad()
    def run_theirs():
        out = theirs.generate(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[0, args.prompt:].tolist()

    run_ours()
    run_theirs()
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        a = run_ours()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = run_theirs()
        t_theirs.append(time.perf_counter() - t0)
    ours_tps, theirs_tps = args.new_tokens / min(t_ours), args.new_tokens / min(t_theirs)
    same = a == b
    print(f"model {args.preset}: {ours.num_params():,} params, pattern {cfg.pattern}; prompt {args.prompt} tokens, "
          f"{args.new_tokens} new tokens, batch 1, {torch.get_num_threads()} threads; time includes prefill")
    print(f"hytron Engine             {ours_tps:8.1f} tok/s  (best of {args.repeats}: {min(t_ours):.2f}s)")
    print(f"transformers generate     {theirs_tps:8.1f} tok/s  (best of {args.repeats}: {min(t_theirs):.2f}s)")
    print(f"same greedy tokens: {same}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "hytron_tok_s": ours_tps, "transformers_tok_s": theirs_tps,
                       "same_tokens": same, "threads": args.threads}, f, indent=2)
    print(f"RATIO batch-1 decode tokens/s hytron Engine / transformers generate = {ours_tps / theirs_tps:.2f}x")


if __name__ == "__main__":
    main()
