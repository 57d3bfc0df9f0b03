"""Claim `reasoning`: after efficient-reasoning training, the same accuracy with several times fewer thinking tokens.

The seed's claim: the same answer quality in 2,000 thinking tokens instead of 10,000 (5x). Here, with the
library of `hytron.reasoning` and `hytron.train` (the same steps as bench/bench_reasoning.py, at a size
chosen for one command):
  1. SFT a tiny hybrid from scratch on verbose traces of multi-step arithmetic  -> "before";
  2. rejection-sampling self-distillation: sample traces, keep each problem's shortest correct one, SFT on
     those rows from the current model (`distill_rounds` rounds);
  3. GRPO (Dr.GRPO normalisation, length penalty on correct answers only)        -> "after".
Both models (and the model after step 2) are evaluated greedily on the same held-out problems at several
thinking budgets.
Headline: mean thinking tokens before / after (unbounded budget) with the accuracy change, and the ratio at
equal accuracy: before's mean thinking tokens over the fewest mean tokens at which "after" (at any budget) is
within 1 point of before's accuracy (`null` if it never is, or if "before" solves nothing).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from hytron.claims.common import line_plot, write_result


@dataclass
class ReasoningClaimSettings:
    train_problems: int = 6000
    sft_steps: int = 600
    sft_batch: int = 16
    distill_rounds: int = 2
    distill_problems: int = 300
    distill_samples: int = 6
    distill_steps: int = 150
    rl_steps: int = 20
    rl_prompts: int = 8
    rl_group: int = 6
    eval_problems: int = 200
    max_tokens: int = 256
    budgets: list[int | None] = field(default_factory=lambda: [0, 8, 16, 32, 64, None])
    seed: int = 0


FULL = ReasoningClaimSettings()  # ~15-25 min on 2 shared CPU cores with --threads 1
QUICK = ReasoningClaimSettings(train_problems=200, sft_steps=6, sft_batch=4, distill_problems=6, distill_samples=2,
                               distill_steps=2, rl_steps=1, rl_prompts=2, rl_group=2, eval_problems=6,
                               max_tokens=48, budgets=[0, 8, None])


def _sft(out: Path, data: Path, steps: int, lr: float, batch: int, seed: int, *, tokenizer: str = "",
         init_from: str | None = None) -> str:
    from hytron.config import from_dict
    from hytron.train.sft import SFTConfig, sft

    shutil.rmtree(out, ignore_errors=True)
    cfg = from_dict(SFTConfig, {
        "name": out.name, "out_dir": str(out), "steps": steps, "seed": seed, "log_every": 10, "eval_every": 0,
        "checkpoint_every": 0, "tokenizer": tokenizer, "model": {"preset": "hytron-tiny", "init_from": init_from},
        "data": {"path": str(data), "seq_len": 320, "batch_size": batch, "val_rows": 8},
        "optim": {"lr": lr, "warmup_steps": max(1, min(20, steps // 10)), "schedule": "wsd"}})
    return sft(cfg, progress=False)["model_dir"]


def equal_accuracy_ratio(before: dict, after: dict, tolerance: float = 0.01) -> float | None:
    """before's mean thinking tokens / the fewest mean tokens (at least 1) of an `after` budget point within
    `tolerance` of before's accuracy; None when none is, or when `before` solves nothing (no accuracy to keep)."""
    ok = [c["mean_thinking_tokens"] for c in after["curve"] if c["accuracy"] >= before["accuracy"] - tolerance]
    if not ok or before["accuracy"] <= 0:
        return None
    return before["mean_thinking_tokens"] / max(min(ok), 1.0)


def run(out: str | Path, quick: bool = False, settings: ReasoningClaimSettings | None = None, log=print) -> dict:
    from hytron.config import from_dict
    from hytron.reasoning import evaluate_reasoning, generate_problems, load_solver, sft_rows, shortest_correct_rows
    from hytron.reasoning.data import write_jsonl
    from hytron.reasoning.grpo import problem_prompts
    from hytron.tokenizer import Tokenizer
    from hytron.train.rl import RLConfig, grpo

    started = time.perf_counter()
    s = settings or (QUICK if quick else FULL)
    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    stages: dict = {}

    def evaluate(model_dir: str) -> dict:
        return evaluate_reasoning(model_dir, kinds="arithmetic", n=s.eval_problems, budgets=s.budgets,
                                  max_tokens=s.max_tokens)

    # 1. verbose SFT from scratch
    rows = sft_rows(generate_problems("arithmetic", s.train_problems, seed=s.seed), "verbose", seed=s.seed,
                    off_share=0.1, truncated_share=0.05)
    data = write_jsonl(rows, work / "sft_verbose.jsonl")
    tok = Tokenizer.train(("\n".join(m["content"] + "\n" + m.get("reasoning_content", "") for m in r["messages"])
                           for r in rows), vocab_size=512)
    tok.save(work / "tokenizer")
    model = _sft(work / "sft_verbose", data, s.sft_steps, 4e-3, s.sft_batch, s.seed, tokenizer=str(work / "tokenizer"))
    before = evaluate(model)
    log(f"before: accuracy {before['accuracy']:.3f}, mean thinking tokens {before['mean_thinking_tokens']:.1f}")

    # 2. rejection-sampling self-distillation
    distilled_rounds = 0
    for k in range(s.distill_rounds):
        pool = generate_problems("arithmetic", s.distill_problems, seed=100 + k)
        rows_k, stats = shortest_correct_rows(load_solver(model), pool, samples=s.distill_samples, temperature=1.0,
                                              seed=100 + k, max_tokens=s.max_tokens)
        stages[f"distill_{k}"] = stats
        if not rows_k:
            log(f"distill round {k}: no correct samples, round skipped")
            continue
        model = _sft(work / f"distill_{k}", write_jsonl(rows_k, work / f"distill_{k}.jsonl"), s.distill_steps, 1e-3,
                     s.sft_batch, s.seed + k + 1, init_from=model)
        distilled_rounds += 1
        log(f"distill round {k}: {stats}")

    distilled = evaluate(model) if distilled_rounds else None  # measure what each stage does to accuracy and length
    if distilled is not None:
        log(f"after distillation: accuracy {distilled['accuracy']:.3f}, mean thinking tokens "
            f"{distilled['mean_thinking_tokens']:.1f}")

    # 3. GRPO with the length penalty on correct answers
    if s.rl_steps:
        shutil.rmtree(work / "rl", ignore_errors=True)
        cfg = from_dict(RLConfig, {
            "name": "rl", "out_dir": str(work / "rl"), "steps": s.rl_steps, "log_every": 1, "checkpoint_every": 0,
            "seed": s.seed, "model": {"init_from": model},
            "optim": {"lr": 2e-4, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0},
            "rl": {"kinds": ["arithmetic"], "prompts_per_step": s.rl_prompts, "group_size": s.rl_group,
                   "max_tokens": s.max_tokens, "length_penalty": 0.5}})
        model = grpo(cfg, problem_prompts(cfg), progress=False)["model_dir"]
    after = evaluate(model)
    log(f"after: accuracy {after['accuracy']:.3f}, mean thinking tokens {after['mean_thinking_tokens']:.1f}")

    headline = {"metric": "mean thinking tokens before / after efficient-reasoning training (unbounded budget)",
                "token_ratio": before["mean_thinking_tokens"] / max(after["mean_thinking_tokens"], 1e-9),
                "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
                "accuracy_change_points": 100 * (after["accuracy"] - before["accuracy"]),
                "thinking_tokens_before": before["mean_thinking_tokens"],
                "thinking_tokens_after": after["mean_thinking_tokens"],
                "equal_accuracy_token_ratio": equal_accuracy_ratio(before, after),
                "goal": ">= 5x fewer thinking tokens with accuracy within 1 point"}
    curves = {"before (verbose SFT)": before, **({"after distillation": distilled} if distilled else {}),
              "after (distill + GRPO)": after}
    points = {n: sorted(r["curve"], key=lambda c: c["mean_thinking_tokens"]) for n, r in curves.items()}
    plots = [line_plot(out / "budget_curves.png",
                       {n: ([c["mean_thinking_tokens"] for c in pts], [100 * c["accuracy"] for c in pts])
                        for n, pts in points.items()},
                       xlabel="mean thinking tokens per answer (one point per budget)", ylabel="accuracy (%)",
                       title="Reasoning claim: accuracy vs thinking budget, before and after")]
    details = {"before": before, "after_distillation": distilled, "after": after, "stages": stages}
    return write_result(out, "reasoning", headline, s, s.seed, details, plots, started)
