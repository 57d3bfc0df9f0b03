"""Reasoning evaluation: accuracy, mean thinking tokens, `/no_think` accuracy, accuracy-vs-budget curve and its plot.

    from hytron.reasoning import evaluate_reasoning, plot_budget_curves
    result = evaluate_reasoning("runs/sft/model", kinds=["arithmetic"], n=200, budgets=[0, 8, 16, 32, None])
    plot_budget_curves({"sft": result}, "budget.png")

Evaluation problems come from `eval_seed` (default 1_000_003), a seed no training set in this package uses,
so they are disjoint from the training problems (by seed; a small task space can still repeat a question).
Decoding is greedy. A budget of None means unbounded thinking (only `max_tokens` caps it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hytron.reasoning.generation import Attempt, Solver, load_solver
from hytron.reasoning.tasks import Problem, generate_problems

EVAL_SEED = 1_000_003
DEFAULT_BUDGETS = (0, 4, 8, 16, 32, 64, None)


def summarise(attempts: Sequence[Attempt]) -> dict:
    """Accuracy, mean thinking tokens, share of budget-forced thinking ends."""
    n = max(1, len(attempts))
    return {"accuracy": sum(a.correct for a in attempts) / n,
            "mean_thinking_tokens": sum(a.thinking_tokens for a in attempts) / n,
            "max_thinking_tokens_seen": max((a.thinking_tokens for a in attempts), default=0),
            "forced_share": sum(a.thinking_forced for a in attempts) / n, "n": len(attempts)}


def evaluate_reasoning(model_dir_or_solver, problems: Sequence[Problem] | None = None, *,
                       kinds: str | Sequence[str] = ("arithmetic",), n: int = 200, eval_seed: int = EVAL_SEED,
                       budgets: Sequence[int | None] = DEFAULT_BUDGETS, no_think: bool = True,
                       max_tokens: int = 512, max_slots: int = 32) -> dict:
    """Evaluate a model directory (or a `Solver`) on reasoning problems; returns a JSON-ready dict:

    `accuracy`, `mean_thinking_tokens` (unbounded thinking), `no_think` ({accuracy, ...} with `/no_think`),
    `curve` ([{budget, accuracy, mean_thinking_tokens, ...}] for every budget; budget None = unbounded),
    plus `n`, `kinds`, `eval_seed`.
    """
    solver = model_dir_or_solver if isinstance(model_dir_or_solver, Solver) else load_solver(model_dir_or_solver,
                                                                                              max_slots)
    if problems is None:
        problems = generate_problems(kinds, n, eval_seed)
    budgets = list(budgets)
    if None not in budgets:
        budgets.append(None)
    curve = []
    for b in budgets:
        attempts = [a[0] for a in solver.solve(problems, thinking=True, max_thinking_tokens=b, max_tokens=max_tokens)]
        curve.append({"budget": b, **summarise(attempts)})
    full = next(c for c in curve if c["budget"] is None)
    result = {"accuracy": full["accuracy"], "mean_thinking_tokens": full["mean_thinking_tokens"], "curve": curve,
              "n": len(problems), "kinds": sorted({p.kind for p in problems}), "eval_seed": eval_seed}
    if no_think:
        attempts = [a[0] for a in solver.solve(problems, thinking=False, max_tokens=max_tokens)]
        result["no_think"] = summarise(attempts)
    return result


def plot_budget_curves(results: Mapping[str, dict], path: str | Path, title: str = "Accuracy vs thinking budget"):
    """Accuracy against mean thinking tokens used, one line per result (labels = keys), as a PNG.

    Each point is one budget; x is the mean thinking tokens actually spent at that budget (so models with
    different trace lengths share an axis). Needs matplotlib (the `eval` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plot_budget_curves needs matplotlib: pip install 'hytron[eval]'") from e
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, res in results.items():
        pts = sorted(res["curve"], key=lambda c: c["mean_thinking_tokens"])
        ax.plot([c["mean_thinking_tokens"] for c in pts], [100 * c["accuracy"] for c in pts], marker="o",
                label=f"{label} (full: {100 * res['accuracy']:.1f}% @ {res['mean_thinking_tokens']:.1f} tok)")
        for c in pts:
            ax.annotate("∞" if c["budget"] is None else str(c["budget"]),
                        (c["mean_thinking_tokens"], 100 * c["accuracy"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
    ax.set_xlabel("mean thinking tokens per answer (budget labelled at each point)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
