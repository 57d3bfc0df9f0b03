"""Shared pieces of the claim reproductions: training through `hytron pretrain`, seeds in parallel, results, plots.

A claim trains with `pretrain_tracked`, which runs the very loop `hytron pretrain` runs (same setup, precision
names, optimizer, WSD schedule, loader, checkpoints and resume) and measures what the claim needs (clean
held-out text, QA) through the loop's evaluation hook. `run_seeds` runs a claim's `run_seed` for every seed,
in parallel processes with `jobs > 1`, and reuses a seed's record already on disk.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hytron.model import HybridLM


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


def pretrain_tracked(data_dir: Path, vocab_size: int, s: LoopSettings, evaluate: Callable[[HybridLM], dict], *,
                     precision: str = "fp32", out: Path, label: str = "", log: Callable[[str], None] = print) -> dict:
    """Pre-train a fresh `s.preset` model on packed data with `hytron.train.pretrain.pretrain` into `out`,
    calling `evaluate(model)` every `eval_every` steps and at the end (the loop's evaluation hook).

    Returns {"train": [{step, tokens, loss}], "evals": [{step, tokens, **metrics}], "tokens_per_step",
    "step_time_median_s", "parameters", "diverged"}, read back from the run's metrics.jsonl, so a run started
    again with the same `out` resumes from its last checkpoint (or returns at once when it had finished).
    `precision` takes the names `hytron pretrain --set precision=...` takes (fp32, bf16, nvfp4, RECIPE+switch).
    """
    from hytron.train.pretrain import pretrain
    from hytron.train.recipe import DataSpec, ModelSpec, OptimSpec, TrainConfig

    index = json.loads((Path(data_dir) / "index.json").read_text())
    if int(index["vocab_size"]) != vocab_size:
        raise ValueError(f"pretrain_tracked: {data_dir} was packed with {index['vocab_size']} ids, not {vocab_size}")
    cfg = TrainConfig(name=label or Path(out).name, out_dir=str(out), steps=s.steps, seed=s.seed, device="cpu",
                      log_every=1, checkpoint_every=max(s.eval_every, 1) * 4, keep_checkpoints=1,
                      model=ModelSpec(preset=s.preset), precision=precision, eval_every=s.eval_every,
                      eval_batches=0, optim=OptimSpec(lr=s.lr, warmup_steps=s.warmup_steps, grad_clip=1.0),
                      data=DataSpec(path=str(data_dir), seq_len=s.seq_len, batch_size=s.batch_size))
    diverged = False
    try:
        pretrain(cfg, progress=False, evaluate_hook=evaluate)
    except FloatingPointError as e:
        log(f"  [{label}] {e}")
        diverged = True
    # one record per step, the last written: a run resumed from its final checkpoint before its summary was
    # written (a kill in that window, or a signal at the last step) evaluates the final step again
    train_by_step, evals_by_step = {}, {}
    for line in (Path(out) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "lr" in rec:  # a training step's record
            train_by_step[rec["step"]] = rec
        else:  # an evaluation's record
            evals_by_step[rec["step"]] = rec
    train = [{"step": r["step"], "tokens": r["tokens"], "loss": r["loss"]} for _, r in sorted(train_by_step.items())]
    step_times = sorted(r["step_s"] for r in train_by_step.values())
    evals = [r for _, r in sorted(evals_by_step.items())]
    for rec in evals:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in rec.items() if isinstance(v, float) and k != "time")
        log(f"  [{label}] step {rec['step']}: {shown}")
    return {"train": train, "evals": evals, "tokens_per_step": s.batch_size * s.seq_len,
            "step_time_median_s": step_times[len(step_times) // 2] if step_times else None,
            "parameters": _parameters(s.preset, vocab_size), "diverged": diverged}


def _parameters(preset: str, vocab_size: int) -> int:
    from hytron.model import HybridConfig

    return HybridConfig.from_name(preset, vocab_size=vocab_size).num_params()


# ---- seeds ------------------------------------------------------------------------------------------------------
def _seed_worker(claim: str, out: str, settings, seed: int, threads: int) -> dict:
    """One seed of one claim in this process: `run_seed`, its record written to OUT/seed{k}/record.json."""
    import importlib

    if threads:
        torch.set_num_threads(threads)
    module = importlib.import_module(f"hytron.claims.{claim}")
    tag = f"[seed {seed}] "
    work = Path(out) / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(_settings_dict(settings)) + "\n")  # what this folder holds
    record = module.run_seed(Path(out), settings, seed, log=lambda m: print(tag + m, flush=True))
    record = {"settings": _settings_dict(settings), **record}
    path = work / "record.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)
    return record


def _settings_dict(settings) -> dict:
    return json.loads(json.dumps(asdict(settings) if hasattr(settings, "__dataclass_fields__") else dict(settings)))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def worker_threads(workers: int, threads: int = 0) -> int:
    """Torch threads for each of `workers` seed processes: `threads` when set, else this process's threads shared
    out (each spawned process would otherwise take every core, and `workers` of them fight over the machine)."""
    return threads or max(1, torch.get_num_threads() // workers)


def run_seeds(claim: str, out: Path, settings, seeds: list[int], *, jobs: int = 1, threads: int = 0,
              log: Callable[[str], None] = print) -> dict[int, dict]:
    """{seed: record} for every seed: a record already in OUT/seed{k}/record.json made with the same settings is
    reused; the others run `run_seed`, `jobs` processes at a time (each with `threads` torch threads; 0 shares this
    process's threads out among them, `worker_threads`).

    A seed's work (data, tokenizer, runs and their checkpoints) lives in OUT/seed{k}/ with the settings it was made
    with (settings.json); a half-finished seed resumes from it. Work made with other settings (or of unknown
    settings) is deleted first: its data and checkpoints would otherwise be resumed under the new settings (a run
    continued from a finished run of other length, data generated with another size)."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    current = _settings_dict(settings)
    records, todo = {}, []
    for seed in seeds:
        work = Path(out) / f"seed{seed}"
        rec = _read_json(work / "record.json")
        if isinstance(rec, dict) and rec.get("settings") == current:
            log(f"seed {seed}: reusing {work / 'record.json'}")
            records[seed] = rec
            continue
        if work.exists() and _read_json(work / "settings.json") != current:
            log(f"seed {seed}: {work} holds work made with other settings; starting this seed afresh")
            shutil.rmtree(work)
        todo.append(seed)
    if jobs == 1 or len(todo) <= 1:
        for seed in todo:
            records[seed] = _seed_worker(claim, str(out), settings, seed, threads)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        workers = min(jobs, len(todo))
        per_worker = worker_threads(workers, threads)
        log(f"{len(todo)} seeds in {workers} processes, {per_worker} torch threads each")
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {seed: pool.submit(_seed_worker, claim, str(out), settings, seed, per_worker) for seed in todo}
            for seed, fut in futures.items():
                records[seed] = fut.result()
    return {seed: records[seed] for seed in seeds}


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


def seeds_for(n: int, first: int = 0) -> list[int]:
    if n < 1:
        raise ValueError(f"--seeds must be >= 1, got {n}")
    return list(range(first, first + n))


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
