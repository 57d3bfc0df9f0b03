"""Shared pieces of the claim reproductions: TinyWeb data prep, a compact pre-training loop, results and plots.

The loop is the pre-training recipe of `hytron.train.pretrain` (AdamW with its parameter groups, the WSD
schedule, gradient clipping, the same `PackedLoader` stream) written out short, so that a claim can evaluate
whatever it needs at fixed token counts (clean held-out text, QA) and swap precision recipes in between.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hytron.model import HybridConfig, HybridLM
from hytron.packing import PackedLoader
from hytron.train.loop import clip_and_step, make_optimizer, set_lr
from hytron.train.recipe import OptimSpec


@dataclass
class LoopSettings:
    """What every run of one claim shares (only the data or the precision differ between runs)."""

    steps: int = 200
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 3e-3
    warmup_steps: int = 10
    eval_every: int = 25
    seed: int = 0
    preset: str = "hytron-tiny"


def train_and_track(data_dir: Path, vocab_size: int, s: LoopSettings, evaluate: Callable[[HybridLM], dict], *,
                    precision: str | None = None, label: str = "", log: Callable[[str], None] = print) -> dict:
    """Pre-train a fresh `s.preset` model on packed data, calling `evaluate(model)` every `eval_every` steps
    and at the end; returns {"train": [{step, tokens, loss}], "evals": [{step, tokens, **metrics}], ...}."""
    torch.manual_seed(s.seed)
    model = HybridLM(HybridConfig.from_name(s.preset, vocab_size=vocab_size))
    recipe = None
    if precision and precision not in ("fp32",):
        from hytron.lowp import PrecisionRecipe, convert

        recipe = PrecisionRecipe.from_name(precision)
        convert(model, recipe)
    optim = OptimSpec(lr=s.lr, warmup_steps=s.warmup_steps, grad_clip=1.0)  # WSD, decay 0.1, AdamW(0.9, 0.95)
    opt = make_optimizer(model, optim)
    loader = PackedLoader(data_dir, s.seq_len, s.batch_size, seed=s.seed)
    tokens_per_step = s.batch_size * s.seq_len
    train, evals, step_times = [], [], []

    def run_eval(step: int) -> None:
        model.eval()
        with torch.inference_mode():
            metrics = evaluate(model)
        model.train()
        evals.append({"step": step, "tokens": step * tokens_per_step, **metrics})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        log(f"  [{label}] step {step}: {shown}")

    model.train()
    for step in range(s.steps):
        set_lr(opt, step, s.steps, optim)
        x, y = next(loader)
        t0 = time.perf_counter()
        loss = model.loss(x, y)
        loss.backward()
        clip_and_step(model, opt, optim.grad_clip)
        step_times.append(time.perf_counter() - t0)
        value = loss.item()
        train.append({"step": step + 1, "tokens": (step + 1) * tokens_per_step, "loss": value})
        if not math.isfinite(value):
            log(f"  [{label}] loss diverged at step {step + 1}")
            break
        if (step + 1) % s.eval_every == 0 or step + 1 == s.steps:
            run_eval(step + 1)
    step_times.sort()
    return {"train": train, "evals": evals, "tokens_per_step": tokens_per_step,
            "step_time_median_s": step_times[len(step_times) // 2] if step_times else None,
            "parameters": model.config.num_params()}


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


def write_result(out: Path, claim: str, headline: dict, settings, seed: int, details: dict, plots: list[str],
                 started: float) -> dict:
    """OUT/result.json: claim, headline figure, settings, seed, environment, details, plot files, seconds."""
    result = {"claim": claim, "headline": headline,
              "settings": asdict(settings) if hasattr(settings, "__dataclass_fields__") else settings,
              "seed": seed, "environment": environment(), "plots": plots,
              "seconds": round(time.perf_counter() - started, 2), "details": details}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) <= 40 else None, markersize=3, linewidth=1.2, label=name)
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
