"""Benchmark: batch-1 greedy decode, hytron's engine (eager, static and compiled decode step) vs llama.cpp f32 and
q8_0 on the same model, at 1 and 2 threads, with the machine's load average beside each figure (issue 27).

The model is the quickstart's shape (hytron-small, random weights, a 4k BPE trained on standard-library text),
exported with `hytron export gguf` for llama.cpp (llama-cpp-python: a plain eval/argmax loop, no sampling chain).
hytron runs through `Engine` (what `hytron serve` runs: scheduler, sampling, text release) with each
`decode_mode`; tokens/s is the decode alone (first token to last), as for llama.cpp. Runs are interleaved, best
of `--repeats`. Checks that every hytron mode gives the same greedy tokens, and compares them with llama.cpp's.
With `--profile`, a per-op profile of one hytron decode step per mode (1 thread). Ratios printed last.

    python bench/bench_decode_static.py [--threads 1 2] [--new-tokens 128] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hytron.export.gguf_model import export_gguf
from hytron.infer import Engine, SamplingParams
from hytron.model import HybridConfig, HybridLM, kernels
from hytron.tokenizer import Tokenizer

MODULES = ("json/decoder.py", "textwrap.py", "argparse.py", "difflib.py", "csv.py")
PROMPT = ("The river Alder rises on Mount Kell and flows north to the sea. Along its banks the old mills "
          "still stand, and every spring the town of Brenna holds a fair where")
MODES = ("eager", "static", "compile")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def hytron_decode(engine: Engine, ids: list[int], n: int) -> tuple[float, list[int]]:
    req = engine.submit(ids, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
    engine.run_until_idle()
    done = req.result()
    return (n - 1) / (done.finish_time - done.first_token_time), done.token_ids


def llama_decode(llm, ids: list[int], n: int) -> tuple[float, list[int]]:
    llm.reset()
    llm.eval(ids)
    out = [int(np.argmax(llm.scores[llm.n_tokens - 1]))]
    t0 = time.perf_counter()
    for _ in range(n - 1):
        llm.eval(out[-1:])
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
    return (n - 1) / (time.perf_counter() - t0), out


def profile_step(model, mode: str, ids: list[int], rows: int = 12) -> None:
    """The ops of 50 decode steps of `mode` (after prefill and compilation), by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        cache = model.new_cache(1, capacity=256)
        tok = model(torch.tensor([ids]), cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        step = (lambda t: model(t, cache)[:, -1]) if mode == "eager" else \
            kernels.StaticDecoder(model, cache, "compile" if mode == "compile" else "eager").step
        for _ in range(5):
            tok = step(tok).argmax(-1, keepdim=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(50):
                tok = step(tok).argmax(-1, keepdim=True)
    print(f"--- profile: decode_mode {mode}, 50 steps, {torch.get_num_threads()} thread(s) ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def measure(threads: int, args) -> dict:
    """All runtimes at `threads` threads, in this process (inductor fixes its thread count when it compiles)."""
    import llama_cpp

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as d:
        lib = Path(sysconfig.get_paths()["stdlib"])
        tok = Tokenizer.train([(lib / m).read_text(encoding="utf-8") for m in MODULES], vocab_size=4096)
        torch.manual_seed(0)
        model_dir = HybridLM(HybridConfig.from_name("hytron-small", vocab_size=tok.vocab_size)).save_pretrained(
            Path(d) / "model", tokenizer=tok)
        files = {t: export_gguf(model_dir, Path(d) / f"model-{t}.gguf", t) for t in ("f32", "q8_0")}
        model = HybridLM.from_pretrained(model_dir).eval()
        ids = tok.encode(PROMPT)
        print(f"model hytron-small: {model.num_params():,} params, pattern {model.config.pattern}; prompt {len(ids)} "
              f"tokens, {args.new_tokens} new tokens, greedy, batch 1; torch {torch.__version__}, llama-cpp-python "
              f"{llama_cpp.__version__}; best of {args.repeats} interleaved runs")
        engines = {m: Engine(model, max_slots=1, decode_mode=m) for m in MODES}
        t0 = time.perf_counter()
        compile_s = engines["compile"].warmup()
        print(f"{threads} thread(s): compiled the batch-1 step in {compile_s:.1f} s ({time.perf_counter() - t0:.1f} s "
              "wall), paid once per process and model shape")
        # logits_all: llama-cpp-python 0.3.36 fills `scores` only then (without it they stay zero, and an argmax
        # loop feeds token 0 every step, as bench_local.py's did: its speed is right, its tokens were not)
        llms = {t: llama_cpp.Llama(model_path=str(f), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                                   logits_all=True, verbose=False) for t, f in files.items()}
        run = {**{m: (lambda e=e: hytron_decode(e, ids, args.new_tokens)) for m, e in engines.items()},
               **{f"llama.cpp {t}": (lambda llm=llm: llama_decode(llm, ids, args.new_tokens))
                  for t, llm in llms.items()}}
        for f in run.values():  # warm-up
            f()
        before = load()
        rates: dict[str, list[float]] = {k: [] for k in run}
        tokens: dict[str, list[int]] = {}
        for _ in range(args.repeats):
            for k, f in run.items():
                rate, tokens[k] = f()
                rates[k].append(rate)
        after = load()
        best = {k: max(v) for k, v in rates.items()}
        same = {k: tokens[k] == tokens["eager"] for k in tokens}
        # llama.cpp's own f32 arithmetic may break a near-tie differently: how far the greedy tokens agree
        agree = {k: next((i for i, (a, b) in enumerate(zip(t, tokens["eager"])) if a != b), len(t))
                 for k, t in tokens.items()}
        print(f"{threads} thread(s), load average (1/5/15 min) {before} before, {after} after:")
        for k, v in best.items():
            print(f"  {k:16s} {v:8.1f} tok/s   greedy tokens equal to hytron eager's: {same[k]} (first "
                  f"{agree[k]} of {len(tokens[k])} agree)")
        print("  ratio to llama.cpp f32: " + ", ".join(f"{k} {best[k] / best['llama.cpp f32']:.2f}x" for k in MODES))
        llms.clear()  # (before profiling: llama.cpp's threads were idle, but its 2-thread profile ran 100x slower)
        if args.profile:
            for m in MODES:
                profile_step(model, m, ids)
    return {"tok_s": best, "runs": rates, "same_tokens": same, "agree": agree, "load_before": before,
            "load_after": after, "compile_s": compile_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="also a per-op profile of each hytron decode mode")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    figures = {}
    for threads in args.threads:  # one process per thread count
        if len(args.threads) == 1:
            figures[threads] = measure(threads, args)
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, __file__, "--threads", str(threads), "--new-tokens", str(args.new_tokens),
                   "--repeats", str(args.repeats), "--json", out.name] + (["--profile"] if args.profile else [])
            subprocess.run(cmd, check=True)
            figures[threads] = json.loads(Path(out.name).read_text())[str(threads)]
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print("RATIO hytron / llama.cpp f32, batch-1 decode: " + "; ".join(
        f"{t} thread(s): " + ", ".join(f"{m} {v['tok_s'][m] / v['tok_s']['llama.cpp f32']:.2f}x" for m in MODES)
        for t, v in figures.items()))

if __name__ == "__main__":
    main()
