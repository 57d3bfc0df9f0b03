"""The whole stack in one run: TinyWeb (or your files) → curate → tokenizer → pack → pre-train → eval → model dir.

Each stage is a function of its inputs and output folder, skipped when its output is already complete, so an
interrupted quickstart picks up where it stopped (and pre-training resumes from its last checkpoint). The
claims (`hytron reproduce`) reuse these stages.

    OUT/tinyweb/      the synthetic crawl, its labels and held-out evals (skipped with --input)
    OUT/curated/      kept/ and removed/ documents, manifest.json (the data card's numbers)
    OUT/tokenizer/    byte-level BPE trained on the curated text
    OUT/packed/       token shards per blend component, index.json
    OUT/run/          checkpoints, metrics.jsonl, config.json, summary.json, model/ (Nemotron-H + tokenizer)
    OUT/run/report.html   the run as one self-contained page (loss curves, curation funnel, evals, cards)
    OUT/quickstart.json   what ran, with timings and the headline figures
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hytron.config import ConfigError, from_dict, recipe_path
from hytron.data.io import write_json

SIZES = {
    # the smallest run that exercises every stage: CI and smoke tests (about a minute on 2 cores)
    "ci": {"docs": 1500, "vocab_size": 1024, "preset": "hytron-tiny", "steps": 40, "seq_len": 128,
           "batch_size": 8, "eval_every": 20, "checkpoint_every": 20, "lr": 3e-3},
    # the README's main job: ~5M-parameter hybrid on 20k TinyWeb documents, 10-15 minutes on 2 CPU cores
    "default": {"docs": 20000, "vocab_size": 4096, "preset": "hytron-small", "steps": 600, "seq_len": 256,
                "batch_size": 8, "eval_every": 100, "checkpoint_every": 100, "lr": 2e-3},
}


@dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    size: str = "default"
    inputs: list[str] = field(default_factory=list)  # your own files/folders instead of TinyWeb
    docs: int | None = None
    steps: int | None = None
    preset: str | None = None
    seed: int = 0
    blend: str = "blend-quickstart"  # a recipes/ name or a YAML file
    workers: int | None = None
    threads: int = 0

    def __post_init__(self):
        if self.size not in SIZES:
            raise ConfigError(f"size: must be one of {sorted(SIZES)}, got {self.size!r}")

    def resolved(self) -> dict[str, Any]:
        s = dict(SIZES[self.size])
        for k in ("docs", "steps", "preset"):
            if getattr(self, k) is not None:
                s[k] = getattr(self, k)
        return s


def _say(msg: str) -> None:
    print(f"[quickstart] {msg}", file=sys.stderr, flush=True)


def make_tinyweb(out: Path, docs: int, seed: int) -> Path:
    from hytron.data import tinyweb

    if (out / "tinyweb.json").is_file() and json.loads((out / "tinyweb.json").read_text()).get("n_docs") == docs:
        return out
    tinyweb.generate(out, docs, seed)
    return out


def curate_docs(inputs: list[str | Path], out: Path, workers: int | None = None) -> dict:
    from hytron.data import pipeline
    from hytron.data.curate_config import load_curate_config

    overrides: dict = {}
    if workers is not None:
        overrides["executor"] = {"workers": workers}
    return pipeline.curate([str(p) for p in inputs], out, load_curate_config(None, overrides))


def train_tokenizer(curated: Path, out: Path, vocab_size: int):
    from hytron.packing import iter_texts
    from hytron.tokenizer import Tokenizer

    if (out / "tokenizer.json").is_file():
        return Tokenizer.load(out)
    tok = Tokenizer.train(iter_texts([curated]), vocab_size=vocab_size)
    tok.save(out)
    return tok


def pack_blend(blend_name: str, curated: Path, tokenizer, out: Path) -> dict:
    from hytron.data.mix import Blend
    from hytron.packing import pack

    if (out / "index.json").is_file():
        return json.loads((out / "index.json").read_text())
    blend = Blend.load(recipe_path(blend_name)).with_inputs([str(curated)])
    return pack(blend, tokenizer, out)


def train_config(run_dir: Path, packed: Path, s: dict, seed: int, threads: int = 0):
    from hytron.train.recipe import TrainConfig

    return from_dict(TrainConfig, {
        "name": "quickstart", "out_dir": str(run_dir), "steps": s["steps"], "seed": seed,
        "log_every": 10, "eval_every": s["eval_every"], "eval_batches": 16, "checkpoint_every": s["checkpoint_every"],
        "threads": threads, "model": {"preset": s["preset"]},
        "data": {"path": str(packed), "seq_len": s["seq_len"], "batch_size": s["batch_size"]},
        "optim": {"lr": s["lr"], "warmup_steps": max(1, s["steps"] // 20), "schedule": "wsd"}})


def run(cfg: QuickstartConfig) -> dict:
    """Every stage, top to bottom; returns (and writes) the summary."""
    from hytron.report import build_report, write_cards
    from hytron.train.pretrain import pretrain

    s = cfg.resolved()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str):
        timings[name] = time.perf_counter()
        _say(name)

    def done(name: str) -> None:
        timings[name] = round(time.perf_counter() - timings[name], 1)

    if cfg.inputs:
        sources = [Path(p) for p in cfg.inputs]
        missing = [str(p) for p in sources if not p.exists()]
        if missing:
            raise FileNotFoundError(f"input(s) not found: {missing}")
    else:
        stage(f"1/6 generating TinyWeb ({s['docs']:,} documents)")
        sources = [make_tinyweb(out / "tinyweb", s["docs"], cfg.seed)]
        done(f"1/6 generating TinyWeb ({s['docs']:,} documents)")

    stage("2/6 curating")
    manifest = curate_docs(sources, out / "curated", cfg.workers)
    done("2/6 curating")

    stage(f"3/6 training a {s['vocab_size']}-token BPE tokenizer")
    tok = train_tokenizer(out / "curated", out / "tokenizer", s["vocab_size"])
    done(f"3/6 training a {s['vocab_size']}-token BPE tokenizer")

    stage("4/6 packing tokens by the blend")
    index = pack_blend(cfg.blend, out / "curated", tok, out / "packed")
    done("4/6 packing tokens by the blend")

    stage(f"5/6 pre-training {s['preset']} for {s['steps']} steps")
    summary = pretrain(train_config(out / "run", out / "packed", s, cfg.seed, cfg.threads))
    write_cards(out / "run" / "model", out / "run",
                evals={k: v for k, v in summary.items() if k.startswith("val_") and k != "val_tokens"})
    done(f"5/6 pre-training {s['preset']} for {s['steps']} steps")

    stage("6/6 evaluating")
    evaluation = evaluate_model(out / "run" / "model", sources[0] if not cfg.inputs else None)
    done("6/6 evaluating")

    report = build_report(out / "run")  # one self-contained HTML page: curves, curation funnel, evals

    counts = manifest.get("counts", manifest.get("summary", {}))
    result = {"out": str(out), "size": cfg.size, "settings": s, "seconds": timings,
              "curation": {"input_docs": counts.get("input"), "kept_docs": counts.get("kept")},
              "train_tokens": index["splits"]["train"]["num_tokens"], "pretrain": summary, "eval": evaluation,
              "model_dir": summary.get("model_dir"), "report": str(report)}
    write_json(out / "quickstart.json", result)
    return result


def evaluate_model(model_dir: Path, tinyweb_dir: Path | None) -> dict:
    """The eval harness's standard suite (held-out loss and bits/byte, TinyWeb QA and arithmetic when a TinyWeb
    dir is given); only the headline numbers are kept here, the full results land in MODEL_DIR/eval.json."""
    from hytron.eval import evaluate_model_dir
    from hytron.report import refresh_cards

    results = evaluate_model_dir(model_dir, tinyweb_dir=tinyweb_dir)
    refresh_cards(model_dir, results)
    return {k: v for k, v in _flatten(results).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
