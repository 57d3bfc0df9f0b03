"""Shared pieces of the claim reproductions: results (result.json with rule, gates and verdict), texts, plots.

Training and seeds go through the pipelines' runner, `hytron.pipelines.experiment` (`run_shape`,
`pretrain_tracked`, `run_seeds`).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch


def tokens_to_reach(evals: list[dict], key: str, target: float) -> float | None:
    """Tokens at which `key` first falls to `target`, linearly interpolated between evaluations (None if never)."""
    prev = None
    for e in evals:
        v = e[key]
        if v <= target:
            if prev is None or prev[key] == v:
                return float(e["tokens"])
            frac = (prev[key] - target) / (prev[key] - v)
            return prev["tokens"] + frac * (e["tokens"] - prev["tokens"])
        prev = e
    return None


def environment() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cuda": torch.cuda.is_available()}


def write_result(out: Path, claim: str, headline: dict, settings, seeds: list[int], details: dict, plots: list[str],
                 started: float, *, data_hashes: dict, disjointness: dict[str, dict[str, int]],
                 tried_settings: list[dict], rule: str, gates: list[dict]) -> dict:
    """OUT/result.json: claim, verdict, the pre-registered rule, the validity gates, headline (criteria with
    per-seed values, mean, 95% interval, verdict), settings, seeds, data hashes (per seed where the data depends
    on it), eval-vs-train overlap counts, the settings tried, environment, plots, seconds. The verdict is
    "not valid" when a gate failed, else read off the criteria's intervals (`stats.claim_verdict`); a failed gate
    also turns each criterion's verdict into "not valid" (its interval's reading stays as `interval_verdict`)."""
    from hytron.claims.stats import apply_gates, claim_verdict

    headline["verdict"] = claim_verdict(headline.get("criteria", []), gates)
    apply_gates(headline.get("criteria", []), gates)
    result = {"claim": claim, "verdict": headline["verdict"], "rule": rule, "gates": gates, "headline": headline,
              "settings": asdict(settings) if hasattr(settings, "__dataclass_fields__") else settings,
              "seeds": list(seeds), "data_hashes": data_hashes, "disjointness": disjointness,
              "tried_settings": tried_settings, "environment": environment(), "plots": plots,
              "seconds": round(time.perf_counter() - started, 2), "details": details}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def write_texts(path: Path, texts) -> Path:
    """A JSONL file of {"text"} rows: the evaluation sets and pools a claim used, kept next to result.json so
    anyone can check them against the training data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), or a clear error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("claim plots need matplotlib: pip install 'hytron[eval]'") from e
    return plt


def line_plot(path: Path, series: dict[str, tuple[list[float], list[float]]], *, xlabel: str, ylabel: str,
              title: str, logx: bool = False, logy: bool = False, hline: float | None = None) -> str:
    """One PNG line chart: series name -> (xs, ys). Returns the file name."""
    return seed_plot(path, {n: [xy] for n, xy in series.items()}, xlabel=xlabel, ylabel=ylabel, title=title,
                     logx=logx, logy=logy, hline=hline)


def seed_plot(path: Path, series: dict[str, list[tuple[list[float], list[float]]]], *, xlabel: str, ylabel: str,
              title: str, logx: bool = False, logy: bool = False, hline: float | None = None) -> str:
    """One PNG chart of curves with seed spread: series name -> one (xs, ys) per seed. Each seed is drawn thin,
    the mean across seeds (at the xs all seeds share) bold, with the min-max band shaded. Returns the file name."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for i, (name, runs) in enumerate(series.items()):
        color = f"C{i % 10}"
        runs = [(xs, ys) for xs, ys in runs if xs]
        for xs, ys in runs if len(runs) > 1 else []:
            ax.plot(xs, ys, color=color, linewidth=0.6, alpha=0.45)
        if not runs:
            continue
        common = sorted(set.intersection(*(set(xs) for xs, _ in runs)))
        cols = [[dict(zip(xs, ys))[x] for x in common] for xs, ys in runs]
        mean = [sum(c[j] for c in cols) / len(cols) for j in range(len(common))]
        label = name if len(runs) == 1 else f"{name} (mean of {len(runs)} seeds)"
        ax.plot(common, mean, color=color, marker="o" if len(common) <= 40 else None, markersize=3, linewidth=1.6,
                label=label)
        if len(runs) > 1:
            ax.fill_between(common, [min(c[j] for c in cols) for j in range(len(common))],
                            [max(c[j] for c in cols) for j in range(len(common))], color=color, alpha=0.15)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.name


def interval_plot(path: Path, criteria: list[dict], *, title: str) -> str:
    """One PNG: per criterion, the per-seed values (dots), the mean and its 95% interval (bar), the threshold
    (dashed) and the verdict. Returns the file name."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(criteria), figsize=(3.2 * len(criteria), 3.4), dpi=110, squeeze=False)
    for ax, c in zip(axes[0], criteria):
        vals = [v for v in c["per_seed"] if v is not None]
        ax.scatter([0] * len(vals), vals, color="C0", s=14, zorder=3, label="seeds")
        if c["mean"] is not None:
            lo, hi = c["ci95"] or (c["mean"], c["mean"])
            ax.errorbar([0.25], [c["mean"]], yerr=[[c["mean"] - lo], [hi - c["mean"]]], fmt="s", color="C1",
                        capsize=5, label="mean, 95% CI")
        ax.axhline(c["threshold"], color="grey", linestyle="--", linewidth=1, label="threshold")
        ax.set_xlim(-0.5, 0.75)
        ax.set_xticks([])
        ax.set_title(f"{c['name']}\n{c['verdict']}", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.name
