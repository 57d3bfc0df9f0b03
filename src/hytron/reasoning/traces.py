"""Reasoning-trace styles for a `Problem`: verbose (restates, re-checks; ~5x longer), concise, search, truncated.

Traces are lines joined by newlines, so a thinking budget that ends thinking at a newline cuts between
sentences. The verbose style is *stochastic*: each optional sentence (the restatement, a step's lead-in,
each re-check, the closing review) is included with probability `keep`, so a model trained on it has a
spread of trace lengths to choose from — what rejection sampling and RL then select on (the "overthinking"
that efficient-reasoning methods remove: research/reasoning-and-fullstack.md §A2). The concise style is the
claims alone: the shortest correct trace the verbose one contains.

The search style (subset-sum) is different in kind: a depth-first search over the numbers in the order the
question lists them, pruning a branch when its sum passes the target, backtracking, and stopping at the first
subset that hits it. Its length is set by where the answer's numbers sit in that order, not by optional
sentences, and the direct path (the concise style: the chosen numbers, checked, in one line) is in none of
them: a shorter correct trace has to be *found* (a branch skipped because it cannot reach the target, a
likely number tried first), which is what rejection sampling and RL with a length penalty can select on.
Every line follows from the question and the line before it, so a small model can learn the search.
"""

from __future__ import annotations

import random

from hytron.reasoning.tasks import Problem, subset_sum_instance

STYLES = ("verbose", "concise", "search")


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


def search_trace(problem: Problem) -> str:
    """A subset-sum problem solved by depth-first search over its numbers in question order, one node a line:
    for `9, 3, 7, 5, 2` and target 18: `9=9`, `9+3=12`, `9+3+7=19 over` (pruned), `9+3+5=17`, `9+3+5+2=19 over`,
    `9+3+2=14` (backtracked), `9+7=16`, `9+7+5=21 over`, `9+7+2=18 found`."""
    numbers, target = subset_sum_instance(problem)
    lines: list[str] = []

    def explore(start: int, stack: list[int], total: int) -> bool:
        for i in range(start, len(numbers)):
            path, s = [*stack, numbers[i]], total + numbers[i]
            text = f"{'+'.join(map(str, path))}={s}"
            if s == target:
                lines.append(f"{text} found")
                return True
            if s > target:  # positive numbers: no extension of this branch can come back down
                lines.append(f"{text} over")
                continue
            lines.append(text)
            if explore(i + 1, path, s):
                return True
        return False  # every extension tried: back to the parent, which tries its next number

    if not explore(0, [], 0):
        raise ValueError(f"no subset of {numbers} sums to {target}")
    return "\n".join(lines)


def render_trace(problem: Problem, style: str, rng: random.Random, **options) -> str:
    """The trace of `problem` in `style` (one of STYLES); `options` go to the verbose style."""
    if style == "concise":
        return concise_trace(problem)
    if style == "verbose":
        return verbose_trace(problem, rng, **options)
    if style == "search":
        if problem.kind != "subset_sum":
            raise ValueError(f"the search style needs subset_sum problems, got {problem.kind!r}")
        return search_trace(problem)
    raise ValueError(f"trace style must be one of {STYLES}, got {style!r}")


def truncate_trace(trace: str, rng: random.Random) -> str:
    """The trace cut after a random line (at least one line kept, at least one dropped when it has two or
    more): Nano 2 trains on truncated traces with the final answer kept, so a budget-forced `</think>` is
    followed by a well-formed answer."""
    lines = trace.split("\n")
    if len(lines) < 2:
        return trace
    return "\n".join(lines[:rng.randint(1, len(lines) - 1)])
