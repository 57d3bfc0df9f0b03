"""Benchmark: a tiny hybrid SFT'd on verbose reasoning traces, then made efficient (self-distillation, then GRPO).

    python bench/bench_reasoning.py --out runs/bench_reasoning        # ~25 min on 2 shared CPU cores

Stages, all on multi-step arithmetic (2-3 operations on numbers <= 9, values <= 30):
  1. train a 512-id BPE tokenizer on the SFT rows; SFT `hytron-tiny` from scratch on verbose traces
     (~7x the concise trace in tokens; 10% reasoning-off rows, 5% truncated traces) -> "verbose";
  2. rejection-sampling self-distillation rounds: sample traces per problem, keep the shortest correct one,
     SFT on those rows from the current model -> "distilled";
  3. GRPO with Dr.GRPO normalisation and the length penalty on correct answers only -> "rl".
Each model is evaluated greedily on the same held-out problems (eval seed 1_000_003) at several thinking
budgets (the accuracy-vs-budget curve) and with /no_think. Results go to OUT/results.json and
OUT/budget_curves.png; the ratio (thinking tokens before / after, and the accuracy change) is printed last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from hytron.config import from_dict
from hytron.reasoning.data import sft_rows, write_jsonl
from hytron.reasoning.distill import shortest_correct_rows
from hytron.reasoning.evaluate import evaluate_reasoning, plot_budget_curves
from hytron.reasoning.generation import load_solver
from hytron.reasoning.grpo import problem_prompts
from hytron.reasoning.tasks import generate_problems
from hytron.tokenizer import Tokenizer
from hytron.train.rl import RLConfig, grpo
from hytron.train.sft import SFTConfig, sft

BUDGETS = [0, 8, 16, 32, 64, None]


def sft_run(out: Path, data: Path, steps: int, lr: float, *, tokenizer: str = "", init_from: str | None = None,
            batch_size: int = 16, seed: int = 0) -> str:
    shutil.rmtree(out, ignore_errors=True)
    cfg = from_dict(SFTConfig, {
        "name": out.name, "out_dir": str(out), "steps": steps, "seed": seed, "log_every": 25, "eval_every": 0,
        "checkpoint_every": 0, "tokenizer": tokenizer,
        "model": {"preset": "hytron-tiny", "init_from": init_from},
        "data": {"path": str(data), "seq_len": 320, "batch_size": batch_size, "val_rows": 32},
        "optim": {"lr": lr, "warmup_steps": min(20, steps // 10), "schedule": "wsd"}})
    return sft(cfg, progress=False)["model_dir"]


def evaluate(label: str, model_dir: str, n: int, results: dict, log) -> None:
    t = time.perf_counter()
    res = evaluate_reasoning(model_dir, kinds="arithmetic", n=n, budgets=BUDGETS, max_tokens=256)
    res["eval_s"] = round(time.perf_counter() - t, 1)
    results["models"][label] = res
    curve = ", ".join(f"{c['budget']}: {100 * c['accuracy']:.1f}%/{c['mean_thinking_tokens']:.1f}t"
                      for c in res["curve"])
    log(f"[{label}] accuracy {100 * res['accuracy']:.1f}%  mean thinking tokens {res['mean_thinking_tokens']:.1f}  "
        f"/no_think {100 * res['no_think']['accuracy']:.1f}%  curve (budget: acc/tokens) {curve}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/bench_reasoning")
    ap.add_argument("--train-problems", type=int, default=6000)
    ap.add_argument("--sft-steps", type=int, default=600)
    ap.add_argument("--distill-rounds", type=int, default=3)
    ap.add_argument("--distill-problems", type=int, default=500)
    ap.add_argument("--distill-samples", type=int, default=8)
    ap.add_argument("--distill-steps", type=int, default=80)
    ap.add_argument("--distill-lr", type=float, default=1e-3)
    ap.add_argument("--verbose-model", default=None,
                    help="skip stage 1: use this already verbose-SFT'd model dir (e.g. OUT/sft_verbose/model of an "
                         "earlier run with the same seeds) and only re-evaluate it")
    ap.add_argument("--rl-steps", type=int, default=40)
    ap.add_argument("--eval-problems", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1)  # more threads thrash on shared cores
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict = {"args": vars(args), "models": {}, "stages": {}}

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - t0:7.1f}s] {msg}"
        print(line, flush=True)
        with open(out / "log.txt", "a") as f:
            f.write(line + "\n")

    # ---- 1. verbose SFT ----------------------------------------------------------------------------------------
    if args.verbose_model:
        model = args.verbose_model
        log(f"stage 1 skipped: verbose model {model}")
    else:
        problems = generate_problems("arithmetic", args.train_problems, seed=0)
        rows = sft_rows(problems, "verbose", seed=0, off_share=0.1, truncated_share=0.05)
        data = write_jsonl(rows, out / "sft_verbose.jsonl")
        tok = Tokenizer.train(("\n".join(m["content"] + "\n" + m.get("reasoning_content", "")
                                         for m in r["messages"]) for r in rows), vocab_size=512)
        tok.save(out / "tokenizer")
        t = time.perf_counter()
        model = sft_run(out / "sft_verbose", data, args.sft_steps, 4e-3, tokenizer=str(out / "tokenizer"))
        results["stages"]["sft_verbose_s"] = round(time.perf_counter() - t, 1)
        log(f"SFT on {len(rows)} verbose rows: {args.sft_steps} steps in {results['stages']['sft_verbose_s']}s")
    evaluate("verbose", model, args.eval_problems, results, log)

    # ---- 2. rejection-sampling self-distillation ---------------------------------------------------------------
    distilled = 0
    for k in range(args.distill_rounds):
        t = time.perf_counter()
        pool = generate_problems("arithmetic", args.distill_problems, seed=100 + k)
        rows_k, stats = shortest_correct_rows(load_solver(model, max_slots=64), pool, samples=args.distill_samples,
                                              temperature=1.0, seed=100 + k, max_tokens=256)
        if stats["solved"] == 0:
            log(f"distill round {k}: no problem solved in {args.distill_samples} samples; stopping distillation")
            break
        data_k = write_jsonl(rows_k, out / f"distill_{k}.jsonl")
        model = sft_run(out / f"distill_{k}", data_k, args.distill_steps, args.distill_lr, init_from=model,
                        seed=k + 1)
        distilled += 1
        results["stages"][f"distill_{k}"] = {**stats, "seconds": round(time.perf_counter() - t, 1)}
        log(f"distill round {k}: {json.dumps(results['stages'][f'distill_{k}'])}")
    if distilled:
        evaluate("distilled", model, args.eval_problems, results, log)

    # ---- 3. GRPO with the length penalty -------------------------------------------------------------------------
    if args.rl_steps:
        t = time.perf_counter()
        shutil.rmtree(out / "rl", ignore_errors=True)
        cfg = from_dict(RLConfig, {
            "name": "rl", "out_dir": str(out / "rl"), "steps": args.rl_steps, "log_every": 1, "checkpoint_every": 0,
            "model": {"init_from": model},
            "optim": {"lr": 2e-4, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0},
            "rl": {"kinds": ["arithmetic"], "prompts_per_step": 8, "group_size": 8, "max_tokens": 256,
                   "length_penalty": 0.5}})
        model = grpo(cfg, problem_prompts(cfg), progress=False)["model_dir"]
        results["stages"]["rl_s"] = round(time.perf_counter() - t, 1)
        log(f"GRPO: {args.rl_steps} steps in {results['stages']['rl_s']}s")
        evaluate("rl", model, args.eval_problems, results, log)

    # ---- report ------------------------------------------------------------------------------------------------
    plot_budget_curves(results["models"], out / "budget_curves.png",
                       title="hytron-tiny, 2-3 step arithmetic: accuracy vs thinking tokens")
    before, after = results["models"]["verbose"], list(results["models"].values())[-1]
    results["token_ratio"] = before["mean_thinking_tokens"] / max(after["mean_thinking_tokens"], 1e-9)
    results["accuracy_change_points"] = 100 * (after["accuracy"] - before["accuracy"])
    results["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    label = list(results["models"])[-1]
    log(f"wrote {out / 'results.json'} and {out / 'budget_curves.png'}")
    print(f"verbose: {100 * before['accuracy']:.1f}% at {before['mean_thinking_tokens']:.1f} thinking tokens; "
          f"{label}: {100 * after['accuracy']:.1f}% at {after['mean_thinking_tokens']:.1f}")
    print(f"ratio: {results['token_ratio']:.2f}x fewer thinking tokens, accuracy change "
          f"{results['accuracy_change_points']:+.1f} points (goal: >= 5x within 1 point)")


if __name__ == "__main__":
    main()
