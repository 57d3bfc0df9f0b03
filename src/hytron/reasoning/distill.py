"""Rejection-sampling self-distillation: sample N traces per problem, keep the shortest correct one as SFT data.

This is FS-BoN-style self-training (Munkhbat et al. 2025; research/reasoning-and-fullstack.md §A2): the
model's own shortest correct trace becomes its new target, so each round moves the trace-length
distribution towards its short end without leaving what the model can already do. The rows it writes are
ordinary chat rows (`hytron.reasoning.data` schema) for `hytron sft` with `model.init_from` the same model.
A share of reasoning-off rows (ground-truth answers, as in the first SFT) keeps `/no_think` trained.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hytron.reasoning.data import problem_row
from hytron.reasoning.generation import Solver
from hytron.reasoning.tasks import Problem


def shortest_correct_rows(solver: Solver, problems: Sequence[Problem], *, samples: int = 8,
                          temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, max_tokens: int = 512,
                          off_share: float = 0.1) -> tuple[list[dict], dict]:
    """(rows, stats): per problem, a row with the shortest correct sampled trace (ties: the first sampled);
    problems with no correct sample are left out. `off_share` of the problems get a reasoning-off row instead."""
    if samples < 1:
        raise ValueError(f"samples: must be >= 1, got {samples}")
    rng = random.Random(f"distill-{seed}")
    off = [rng.random() < off_share for _ in problems]
    think_problems = [p for p, o in zip(problems, off) if not o]
    attempts = solver.solve(think_problems, thinking=True, samples=samples, temperature=temperature, top_p=top_p,
                            seed=seed, max_tokens=max_tokens)
    rows, kept_lengths, all_lengths, solved, correct = [], [], [], 0, 0
    for p, tries in zip(think_problems, attempts):
        all_lengths += [a.thinking_tokens for a in tries]
        good = [a for a in tries if a.correct and a.finish_reason == "stop"]
        correct += len(good)
        if not good:
            continue
        best = min(good, key=lambda a: a.thinking_tokens)
        rows.append(problem_row(p, best.reasoning.strip()))
        kept_lengths.append(best.thinking_tokens)
        solved += 1
    rows += [problem_row(p, None) for p, o in zip(problems, off) if o]
    rows.sort(key=lambda r: r["id"])
    n = max(1, len(think_problems))
    stats = {"problems": len(think_problems), "solved": solved, "pass_at_n": solved / n,
             "sample_accuracy": correct / max(1, n * samples),
             "mean_sampled_thinking_tokens": sum(all_lengths) / max(1, len(all_lengths)),
             "mean_kept_thinking_tokens": sum(kept_lengths) / max(1, len(kept_lengths)),
             "off_rows": sum(off), "rows": len(rows)}
    return rows, stats
