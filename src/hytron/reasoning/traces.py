"""Reasoning-trace styles for a `Problem`: verbose (restates, re-checks; ~5x longer), concise, and truncated.

Traces are lines joined by newlines, so a thinking budget that ends thinking at a newline cuts between
sentences. The verbose style is *stochastic*: each optional sentence (the restatement, a step's lead-in,
each re-check, the closing review) is included with probability `keep`, so a model trained on it has a
spread of trace lengths to choose from — what rejection sampling and RL then select on (the "overthinking"
that efficient-reasoning methods remove: research/reasoning-and-fullstack.md §A2). The concise style is the
claims alone: the shortest correct trace the verbose one contains.
"""

from __future__ import annotations

import random

from hytron.reasoning.tasks import Problem

STYLES = ("verbose", "concise")


def concise_trace(problem: Problem) -> str:
    """One bare claim per line: `7 + 5 = 12\\n12 - 3 = 9`."""
    return "\n".join(s.claim for s in problem.steps)


def verbose_trace(problem: Problem, rng: random.Random, keep: float = 0.6, max_checks: int = 1) -> str:
    """Restate the problem, lead into each step, re-check it up to `max_checks` times, review at the end."""
    lines = []
    if rng.random() < keep:
        lines.append(problem.restatement)
    for step in problem.steps:
        if rng.random() < keep:
            lines.append(step.lead)
        lines.append(step.claim)
        for _ in range(max_checks):
            if rng.random() < keep:
                lines.append(step.check)
    if rng.random() < keep:
        lines.append("Let me go over it once more: " + "; ".join(s.claim for s in problem.steps) + ".")
    if rng.random() < keep:
        lines.append(f"Everything checks out, so the result is {problem.answer}.")
    return "\n".join(lines)


def render_trace(problem: Problem, style: str, rng: random.Random, **options) -> str:
    """The trace of `problem` in `style` (one of STYLES); `options` go to the verbose style."""
    if style == "concise":
        return concise_trace(problem)
    if style == "verbose":
        return verbose_trace(problem, rng, **options)
    raise ValueError(f"trace style must be one of {STYLES}, got {style!r}")


def truncate_trace(trace: str, rng: random.Random) -> str:
    """The trace cut after a random line (at least one line kept, at least one dropped when it has two or
    more): Nano 2 trains on truncated traces with the final answer kept, so a budget-forced `</think>` is
    followed by a well-formed answer."""
    lines = trace.split("\n")
    if len(lines) < 2:
        return trace
    return "\n".join(lines[:rng.randint(1, len(lines) - 1)])
