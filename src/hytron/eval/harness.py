"""`evaluate_model`: run the evaluation tasks on a model directory and write `eval.json` (the caller refreshes the
model's cards: `hytron.report.cards.refresh_cards`).

Tasks:
- `validation`: loss (nats/token) and bits per byte on TinyWeb's clean held-out text;
- `world_qa`, `arithmetic`: multiple choice by log-likelihood ranking (see `hytron.eval.tasks`);
- lm-eval tasks by name (`lm_eval_tasks`, with `lm_eval_include` for local task folders);
- any `extra` task: a name -> zero-argument function returning a metrics dict. The CLI passes the reasoning
  evaluation (`hytron.reasoning.evaluate_reasoning`) this way, because `hytron.eval` sits beside
  `hytron.reasoning` in the layering and does not import it.

The evaluation files are found, in order: `evals=` (a TinyWeb dir or its evals/ folder); the TinyWeb crawl
recorded in the model's card (card.json: curation inputs); else TinyWeb's seed-0 evaluation sets are
generated into a temporary folder (TinyWeb's evaluation sets depend only on the seed). The source used is
recorded in the results.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from hytron.data.io import write_json
from hytron.eval.scoring import Scorer
from hytron.eval.tasks import TASKS, run_tinyweb_tasks

DEFAULT_TASKS = TASKS


def _tinyweb_root(path: Path) -> Path | None:
    for d in (path, *path.parents):
        if (d / "tinyweb.json").is_file():
            return d
    return None


def evals_from_card(model_dir: Path) -> Path | None:
    """The TinyWeb folder the model's training data was curated from, according to its card.json."""
    card = model_dir / "card.json"
    if not card.is_file():
        return None
    facts = json.loads(card.read_text())
    for cur in (facts.get("data") or {}).get("curation", []):
        for inp in cur.get("inputs", []):
            root = _tinyweb_root(Path(inp["path"]))
            if root is not None and (root / "evals").is_dir():
                return root
    return None


def evaluate_model(model_dir: str | Path, *, evals: str | Path | None = None, tasks: Sequence[str] = DEFAULT_TASKS,
                   limit: int | None = None, lm_eval_tasks: Sequence[str] = (), lm_eval_include: str | Path | None
                   = None, extra: Mapping[str, Callable[[], dict]] | None = None, write: bool = True,
                   scorer: Scorer | None = None, batch_size: int = 32) -> dict:
    """Evaluate `model_dir`; returns {"model", "tasks": {name: metrics}, "settings", ...} and, with `write`,
    saves it as MODEL_DIR/eval.json and rewrites the model and data cards (when the directory has them)."""
    model_dir = Path(model_dir)
    scorer = scorer or Scorer.load(model_dir, batch_size=batch_size)
    t0 = time.perf_counter()
    results: dict = {"model": str(model_dir), "tasks": {}, "timing_s": {}}
    source = "given"
    with tempfile.TemporaryDirectory() as tmp:
        lm_tasks = [t for t in tasks if t in TASKS]
        if lm_tasks:
            if evals is None:
                evals = evals_from_card(model_dir)
                source = "model card (training crawl)"
            if evals is None:
                from hytron.data.tinyweb import generate

                generate(Path(tmp) / "tinyweb", n_docs=50, seed=0)
                evals, source = Path(tmp) / "tinyweb", "generated: TinyWeb seed 0"
            for task in lm_tasks:
                t = time.perf_counter()
                results["tasks"].update(run_tinyweb_tasks(scorer, evals, (task,), limit))
                results["timing_s"][task] = time.perf_counter() - t
        unknown = [t for t in tasks if t not in TASKS and t not in (extra or {})]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {', '.join([*TASKS, *(extra or {})])} "
                             "(lm-eval tasks go in lm_eval_tasks / --lm-eval)")
    for name, fn in (extra or {}).items():
        t = time.perf_counter()
        results["tasks"][name] = fn()
        results["timing_s"][name] = time.perf_counter() - t
    if lm_eval_tasks:
        from hytron.eval.lm_eval_bridge import run_lm_eval

        t = time.perf_counter()
        lm = run_lm_eval(scorer, list(lm_eval_tasks), include_path=lm_eval_include, limit=limit)
        for task, metrics in lm["tasks"].items():
            results["tasks"][f"lm_eval/{task}"] = metrics
        results["timing_s"]["lm_eval"] = time.perf_counter() - t
    results["settings"] = {"evals": str(evals) if evals is not None else None, "evals_source": source,
                           "limit": limit, "lm_eval_tasks": list(lm_eval_tasks),
                           "lm_eval_include": str(lm_eval_include) if lm_eval_include else None,
                           "max_len": scorer.max_len, "torch": torch.__version__, "python": platform.python_version()}
    results["seconds"] = time.perf_counter() - t0
    if write:
        write_json(model_dir / "eval.json", results, indent=1)
    return results


def evaluate_model_dir(model_dir: str | Path, tinyweb_dir: str | Path | None = None, *, limit: int | None = 200,
                       **kwargs) -> dict:
    """The standard TinyWeb suite on at most `limit` items per task (the quickstart's evaluation step)."""
    return evaluate_model(model_dir, evals=tinyweb_dir, limit=limit, **kwargs)
