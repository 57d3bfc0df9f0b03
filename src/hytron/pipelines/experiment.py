"""The runner of the claim reproductions (`hytron.claims`): a tracked `hytron pretrain` run and seeds in parallel.

`run_shape` is a claim's training run (a `TrainConfig`: preset, length, batch, optimizer, evaluation cadence) that
every arm of the claim shares; `pretrain_tracked` runs the very loop `hytron pretrain` runs (same setup, precision
names, optimizer, WSD schedule, loader, checkpoints and resume) on one arm's data and measures what the claim
needs (clean held-out text, QA) through the loop's evaluation hook. `run_seeds` runs a claim module's
`run_seed` for every seed, in parallel processes with `jobs > 1`, and reuses a seed's record already on disk.
"""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from hytron.model import HybridLM
from hytron.train.recipe import DataSpec, ModelSpec, OptimSpec, TrainConfig


def run_shape(*, steps: int = 200, batch_size: int = 8, seq_len: int = 128, lr: float = 3e-3, warmup_steps: int = 10,
              eval_every: int = 25, seed: int = 0, preset: str = "hytron-tiny") -> TrainConfig:
    """The training run every arm of a claim shares (only the data, the precision or the seed differ): a fresh
    `preset` model on CPU, WSD schedule, a log line per step, one checkpoint kept, no loss-based evaluation of
    its own (the claim's hook measures)."""
    return TrainConfig(steps=steps, seed=seed, device="cpu", log_every=1, keep_checkpoints=1,
                       model=ModelSpec(preset=preset), eval_every=eval_every, eval_batches=0,
                       optim=OptimSpec(lr=lr, warmup_steps=warmup_steps, grad_clip=1.0),
                       data=DataSpec(seq_len=seq_len, batch_size=batch_size))


def pretrain_tracked(data_dir: Path, vocab_size: int, run: TrainConfig, evaluate: Callable[[HybridLM], dict], *,
                     precision: str = "fp32", out: Path, label: str = "", log: Callable[[str], None] = print) -> dict:
    """Pre-train `run` (a `run_shape`) on the packed data `data_dir` with `hytron.train.pretrain.pretrain` into
    `out`, calling `evaluate(model)` every `run.eval_every` steps and at the end (the loop's evaluation hook).

    Returns {"train": [{step, tokens, loss}], "evals": [{step, tokens, **metrics}], "tokens_per_step",
    "step_time_median_s", "parameters", "diverged"}, read back from the run's metrics.jsonl, so a run started
    again with the same `out` resumes from its last checkpoint (or returns at once when it had finished).
    `precision` takes the names `hytron pretrain --set precision=...` takes (fp32, bf16, nvfp4, RECIPE+switch).
    """
    from hytron.train.pretrain import pretrain

    index = json.loads((Path(data_dir) / "index.json").read_text())
    if int(index["vocab_size"]) != vocab_size:
        raise ValueError(f"pretrain_tracked: {data_dir} was packed with {index['vocab_size']} ids, not {vocab_size}")
    cfg = replace(run, name=label or Path(out).name, out_dir=str(out), precision=precision,
                  checkpoint_every=max(run.eval_every, 1) * 4, data=replace(run.data, path=str(data_dir)))
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
    return {"train": train, "evals": evals, "tokens_per_step": run.data.batch_size * run.data.seq_len,
            "step_time_median_s": step_times[len(step_times) // 2] if step_times else None,
            "parameters": _parameters(run.model.preset, vocab_size), "diverged": diverged}


def _parameters(preset: str, vocab_size: int) -> int:
    from hytron.model import HybridConfig

    return HybridConfig.from_name(preset, vocab_size=vocab_size).num_params()


# ---- seeds ------------------------------------------------------------------------------------------------------
def _seed_worker(module: str, out: str, settings, seed: int, threads: int) -> dict:
    """One seed of one experiment in this process: the module's `run_seed`, its record written to
    OUT/seed{k}/record.json."""
    if threads:
        torch.set_num_threads(threads)
    tag = f"[seed {seed}] "
    work = Path(out) / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(_settings_dict(settings)) + "\n")  # what this folder holds
    run_seed = importlib.import_module(module).run_seed
    record = run_seed(Path(out), settings, seed, log=lambda m: print(tag + m, flush=True))
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


def run_seeds(module: str, out: Path, settings, seeds: list[int], *, jobs: int = 1, threads: int = 0,
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
            records[seed] = _seed_worker(module, str(out), settings, seed, threads)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        workers = min(jobs, len(todo))
        per_worker = worker_threads(workers, threads)
        log(f"{len(todo)} seeds in {workers} processes, {per_worker} torch threads each")
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {seed: pool.submit(_seed_worker, module, str(out), settings, seed, per_worker) for seed in todo}
            for seed, fut in futures.items():
                records[seed] = fut.result()
    return {seed: records[seed] for seed in seeds}


def seeds_for(n: int, first: int = 0) -> list[int]:
    if n < 1:
        raise ValueError(f"--seeds must be >= 1, got {n}")
    return list(range(first, first + n))
