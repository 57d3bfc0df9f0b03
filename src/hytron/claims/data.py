"""Claim `data`: curated (and rephrased) data reaches the raw-data model's validation loss in fewer tokens.

Nemotron's data claim is usually quoted as "~4x faster convergence" (the source of that exact figure is
unclear; see research/data-curation.md §2.4), so we measure the testable form: pre-train the same tiny
model, same seed, same number of tokens, on
  1. raw TinyWeb (the crawl as generated: junk, duplicates, other languages, leaked eval pages and all),
  2. curated TinyWeb (`hytron curate` defaults: kept documents),
  3. curated + rephrased TinyWeb (kept documents plus the offline Nemotron-CC-style rephrasings),
with one tokenizer (trained on the curated text) for all three, and evaluate every run at fixed token
counts on TinyWeb's *clean held-out* validation text and world-fact QA (multiple choice by log-likelihood).
Headline: tokens the raw run needed to reach its final validation loss, divided by the tokens each curated
run needed to reach that same loss (interpolated between evaluations; `null` when never reached).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hytron.claims.common import LoopSettings, line_plot, tokens_to_reach, train_and_track, write_result


@dataclass
class DataClaimSettings(LoopSettings):
    docs: int = 4000
    vocab_size: int = 2048
    val_docs: int = 100  # clean held-out documents per evaluation
    qa_items: int = 200  # world-fact questions per evaluation


FULL = DataClaimSettings()
QUICK = DataClaimSettings(docs=300, vocab_size=512, steps=8, batch_size=4, seq_len=64, eval_every=4, val_docs=8,
                          qa_items=8, warmup_steps=2)


def prepare(work: Path, s: DataClaimSettings, log=print) -> tuple[dict[str, Path], int, Path]:
    """TinyWeb -> curate (with offline rephrasing) -> tokenizer -> three packed datasets; returns them,
    the vocabulary size and the TinyWeb folder."""
    from hytron.data.curate_config import load_curate_config
    from hytron.data.mix import single_component_blend
    from hytron.data.pipeline import curate
    from hytron.data.tinyweb import generate
    from hytron.packing import iter_texts, pack
    from hytron.tokenizer import Tokenizer

    tinyweb, curated = work / "tinyweb", work / "curated"
    if not (tinyweb / "tinyweb.json").is_file():
        generate(tinyweb, n_docs=s.docs, seed=s.seed)
    cfg = load_curate_config(None, {"rephrase": {"enabled": True, "backend": "offline"},
                                    "executor": {"workers": 1 if s.docs <= 1000 else 0}})
    manifest = curate([tinyweb], curated, cfg, progress=False)
    log(f"curated {manifest['counts']}")
    tok = Tokenizer.train(iter_texts([curated]), vocab_size=s.vocab_size)
    inputs = {"raw": [str(tinyweb)], "curated": [str(curated)]}
    synthetic = curated / "synthetic"
    inputs["curated+rephrased"] = [str(curated)] + ([str(synthetic)] if any(synthetic.glob("*.jsonl*")) else [])
    packed = {}
    for name, paths in inputs.items():
        packed[name] = work / "packed" / name.replace("+", "_")
        if not (packed[name] / "index.json").is_file():
            index = pack(single_component_blend(paths, validation_fraction=0.0, seed=s.seed), tok, packed[name])
            log(f"packed {name}: {index['splits']['train']['num_tokens']:,} tokens")
    return packed, tok.vocab_size, tinyweb


def run(out: str | Path, quick: bool = False, settings: DataClaimSettings | None = None, log=print) -> dict:
    from hytron.data.io import read_jsonl
    from hytron.eval.scoring import Scorer
    from hytron.eval.tasks import multiple_choice, world_qa_items
    from hytron.tokenizer import Tokenizer

    started = time.perf_counter()
    s = settings or (QUICK if quick else FULL)
    out = Path(out)
    packed, vocab, tinyweb = prepare(out / "work", s, log)
    tok = Tokenizer.load(packed["curated"] / "tokenizer")
    val_texts = [r["text"] for r in read_jsonl(tinyweb / "evals" / "validation.jsonl", s.val_docs)]
    qa = world_qa_items(tinyweb / "evals" / "world_qa.jsonl", limit=s.qa_items)

    def evaluate(model) -> dict:
        scorer = Scorer(model, tok)
        docs = scorer.document_nll(val_texts)
        nll, tokens, n_bytes = (sum(d[k] for d in docs) for k in ("nll", "tokens", "bytes"))
        from hytron.eval.scoring import bits_per_byte

        return {"val_loss": nll / tokens, "val_bpb": bits_per_byte(nll, n_bytes),
                "qa_acc": multiple_choice(scorer, qa)["acc"]}

    runs = {name: train_and_track(path, vocab, s, evaluate, label=name, log=log) for name, path in packed.items()}
    target = runs["raw"]["evals"][-1]["val_loss"]
    raw_tokens = tokens_to_reach(runs["raw"]["evals"], "val_loss", target)
    headline = {"metric": "tokens for the raw run to reach its final clean-validation loss / tokens for this run "
                          "to reach the same loss (higher = faster convergence)",
                "raw_final_val_loss": target, "raw_tokens": raw_tokens}
    for name in ("curated", "curated+rephrased"):
        t = tokens_to_reach(runs[name]["evals"], "val_loss", target)
        headline[f"{name}_tokens_to_raw_loss"] = t
        headline[f"{name}_speedup"] = raw_tokens / t if t else None
        headline[f"{name}_final_val_loss"] = runs[name]["evals"][-1]["val_loss"]
        headline[f"{name}_final_qa_acc"] = runs[name]["evals"][-1]["qa_acc"]
    headline["raw_final_qa_acc"] = runs["raw"]["evals"][-1]["qa_acc"]
    headline["qa_chance"] = 0.25
    plots = [
        line_plot(out / "val_loss.png", {n: ([e["tokens"] for e in r["evals"]], [e["val_loss"] for e in r["evals"]])
                                         for n, r in runs.items()},
                  xlabel="training tokens", ylabel="clean held-out loss (nats/token)", hline=target,
                  title="Data claim: validation loss vs tokens (dashed: raw run's final loss)"),
        line_plot(out / "qa_accuracy.png", {n: ([e["tokens"] for e in r["evals"]], [e["qa_acc"] for e in r["evals"]])
                                            for n, r in runs.items()},
                  xlabel="training tokens", ylabel="world-fact QA accuracy (4 choices)", hline=0.25,
                  title="Data claim: QA accuracy vs tokens (dashed: chance)"),
    ]
    return write_result(out, "data", headline, s, s.seed, {"runs": runs}, plots, started)
