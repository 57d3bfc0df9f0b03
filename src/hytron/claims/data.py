"""Claim `data`: curated data reaches the raw-data model's validation loss in fewer tokens, and how that scales.

Nemotron's data claim is usually quoted as "~4x faster convergence" (the source of that exact figure is
unclear; research/data-curation.md §2.4), so we measure the testable form: for each raw-crawl junk share,
pre-train the same tiny model for the same tokens on
  1. raw TinyWeb (the crawl as generated: junk, duplicates, other languages, leaked eval pages and all),
  2. curated TinyWeb (`hytron curate` defaults, no rephrasing: kept documents only),
with one tokenizer trained on the *raw* crawl (neither run's curated side shapes it), and evaluate every
run at fixed token counts on TinyWeb's clean held-out validation text and world-fact QA (4-way multiple
choice by log-likelihood), both decontaminated against the raw crawl (validation documents sharing a
`decontam_ngram`-word run with a crawl page, QA questions that occur verbatim in one, are dropped).

The crawl keeps `clean_docs` good documents at every junk share (the junk is added on top), so the curated
runs see the same amount of good text and only the junk around it changes. Real crawls are far dirtier
than TinyWeb's default 33%. Published pipelines keep a small fraction of what they read:
  - Nemotron-CC: the "High" quality bucket is 12.6% of the tokens (Su et al. 2024, arXiv 2412.02595;
    research/data-curation.md §2), i.e. 87% is below it;
  - FineWeb-Edu: 1.3T tokens kept at classifier threshold 3 out of FineWeb's 15T (Penedo et al. 2024,
    arXiv 2406.17557), i.e. 91% removed, after FineWeb's own filtering of Common Crawl;
  - DCLM-Baseline: ~1.4% of DCLM-Pool's tokens (Li et al. 2024, arXiv 2406.11794; research §3).
Much of that is quality selection and non-English text rather than junk of TinyWeb's kinds, so the default
sweep `junk_shares` is 0.33 (TinyWeb's generator), 0.8, and 0.9 (the mild end of the published removal
rates: FineWeb-Edu's 91%, Nemotron-CC's 87%); `--set 'junk_shares=[...]'` sets others. The headline is at
the largest share and the speed-up is reported at every share, so the reader sees how the figure follows
the junk share.

Headline per seed: tokens the raw run needed to reach its final validation loss / tokens the curated run
needed to reach it (interpolated between evaluations). QA accuracy at the end of each run is reported with
its interval next to chance (0.25), as the downstream check of whether the loss gain carries over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from hytron.claims import stats
from hytron.claims.common import (
    LoopSettings,
    interval_plot,
    pretrain_tracked,
    seed_plot,
    seeds_for,
    tokens_to_reach,
    write_result,
    write_texts,
)


@dataclass
class DataClaimSettings(LoopSettings):
    clean_docs: int = 2500  # good documents in every crawl; junk documents come on top
    junk_shares: list[float] = field(default_factory=lambda: [0.33, 0.8, 0.9])  # see the docstring
    vocab_size: int = 2048
    val_docs: int = 100  # clean held-out documents per evaluation
    qa_items: int = 200  # world-fact questions per evaluation
    decontam_ngram: int = 50


FULL = DataClaimSettings()
QUICK = DataClaimSettings(clean_docs=150, junk_shares=[0.33, 0.6], vocab_size=512, steps=8, batch_size=4,
                          seq_len=64, eval_every=4, val_docs=8, qa_items=8, warmup_steps=2)
TRIED = [{"docs": 4000, "junk_shares": [0.33], "runs": ["raw", "curated", "curated+rephrased"], "seeds": [0],
          "note": "earlier version: tokenizer trained on curated text, validation not decontaminated"}]


def prepare(work: Path, s: DataClaimSettings, junk: float, log=print) -> tuple[dict[str, Path], Path, dict]:
    """TinyWeb at `junk` -> curate -> tokenizer (raw crawl) -> packed raw and curated; returns them, the TinyWeb
    folder and the curation counts."""
    from hytron.data.curate_config import load_curate_config
    from hytron.data.mix import single_component_blend
    from hytron.data.pipeline import curate
    from hytron.data.tinyweb import generate
    from hytron.packing import iter_texts, pack
    from hytron.tokenizer import Tokenizer

    tinyweb, curated = work / "tinyweb", work / "curated"
    docs = round(s.clean_docs / (1 - junk))
    if not (tinyweb / "tinyweb.json").is_file():
        generate(tinyweb, n_docs=docs, seed=0, junk_share=junk)
    cfg = load_curate_config(None, {"executor": {"workers": 1 if docs <= 1000 else 0}})
    manifest = curate([tinyweb], curated, cfg, progress=False)
    log(f"junk {junk}: {docs} docs, curated {manifest['counts']}")
    tok = Tokenizer.train(iter_texts([tinyweb]), vocab_size=s.vocab_size)
    packed = {}
    for name, path in (("raw", tinyweb), ("curated", curated)):
        packed[name] = work / "packed" / name
        if not (packed[name] / "index.json").is_file():
            index = pack(single_component_blend([str(path)], validation_fraction=0.0, seed=0), tok, packed[name])
            log(f"packed {name}: {index['splits']['train']['num_tokens']:,} tokens")
    return packed, tinyweb, manifest["counts"]


def run(out: str | Path, quick: bool = False, settings: DataClaimSettings | None = None, seeds: int = 3,
        log=print) -> dict:
    from hytron.data.io import read_jsonl
    from hytron.eval.scoring import Scorer, bits_per_byte
    from hytron.eval.tasks import multiple_choice, world_qa_items
    from hytron.packing import iter_texts
    from hytron.tokenizer import Tokenizer

    started = time.perf_counter()
    s = settings or (QUICK if quick else FULL)
    if not s.junk_shares or any(not 0 <= j < 1 for j in s.junk_shares):
        raise ValueError(f"data claim: junk_shares must be values in [0, 1), got {s.junk_shares}")
    out = Path(out)
    seed_list = seeds_for(seeds)
    per_share, hashes, disjoint, details = {}, {}, {}, {}
    for junk in s.junk_shares:
        key = f"junk_{junk:g}"
        packed, tinyweb, counts = prepare(out / "work" / key, s, junk, log)
        tok = Tokenizer.load(packed["raw"] / "tokenizer")
        crawl = list(iter_texts([tinyweb]))
        curated_texts = list(iter_texts([tinyweb.parent / "curated"]))
        val_all = [r["text"] for r in read_jsonl(tinyweb / "evals" / "validation.jsonl")]
        val_texts, val_removed = stats.decontaminate(val_all, str, crawl, s.decontam_ngram)
        val_texts = val_texts[:s.val_docs]
        qa_all = world_qa_items(tinyweb / "evals" / "world_qa.jsonl")
        qa, qa_removed = stats.decontaminate(qa_all, lambda q: q["question"], crawl, ngram=10_000)  # verbatim
        qa = qa[:s.qa_items]
        write_texts(out / "eval" / f"{key}_validation.jsonl", val_texts)
        write_texts(out / "eval" / f"{key}_qa.jsonl", (q["question"] for q in qa))
        log(f"  decontaminated: validation -{val_removed} (of {len(val_all)}), QA -{qa_removed} (of {len(qa_all)})")
        hashes[key] = {"raw_crawl": stats.content_hash(crawl), "curated": stats.content_hash(curated_texts),
                       "validation": stats.content_hash(val_texts),
                       "qa": stats.content_hash(q["question"] for q in qa)}
        disjoint[f"{key}/validation"] = {"raw_crawl": stats.overlap(val_texts, crawl, s.decontam_ngram),
                                         "curated": stats.overlap(val_texts, curated_texts, s.decontam_ngram)}
        disjoint[f"{key}/qa"] = {"raw_crawl": stats.decontaminate(qa, lambda q: q["question"], crawl, 10_000)[1],
                                 "curated": stats.decontaminate(qa, lambda q: q["question"], curated_texts,
                                                                10_000)[1]}

        def evaluate(model, tok=tok, val_texts=val_texts, qa=qa) -> dict:
            scorer = Scorer(model, tok)
            docs = scorer.document_nll(val_texts)
            nll, tokens, n_bytes = (sum(d[k] for d in docs) for k in ("nll", "tokens", "bytes"))
            return {"val_loss": nll / tokens, "val_bpb": bits_per_byte(nll, n_bytes),
                    "qa_acc": multiple_choice(scorer, qa)["acc"]}

        runs = {name: {sd: pretrain_tracked(path, tok.vocab_size, replace(s, seed=sd), evaluate,
                                            out=out / "runs" / f"{key}-{name}-s{sd}", label=f"{key} {name} s{sd}",
                                            log=log) for sd in seed_list}
                for name, path in packed.items()}
        speedups, raw_qa, cur_qa = [], [], []
        for sd in seed_list:
            raw_ev, cur_ev = runs["raw"][sd]["evals"], runs["curated"][sd]["evals"]
            target = raw_ev[-1]["val_loss"]
            t_raw, t_cur = tokens_to_reach(raw_ev, "val_loss", target), tokens_to_reach(cur_ev, "val_loss", target)
            speedups.append(t_raw / t_cur if t_cur else None)
            raw_qa.append(raw_ev[-1]["qa_acc"])
            cur_qa.append(cur_ev[-1]["qa_acc"])
        per_share[junk] = {"speedup": stats.estimate(speedups), "raw_final_qa_acc": stats.estimate(raw_qa),
                           "curated_final_qa_acc": stats.estimate(cur_qa),
                           "qa_gain": stats.difference(cur_qa, raw_qa),
                           "raw_final_val_loss": stats.estimate([runs["raw"][sd]["evals"][-1]["val_loss"]
                                                                 for sd in seed_list]),
                           "curated_final_val_loss": stats.estimate([runs["curated"][sd]["evals"][-1]["val_loss"]
                                                                     for sd in seed_list]),
                           "crawl_docs": counts.get("input"), "curated_docs": counts.get("kept"),
                           "validation_docs": len(val_texts), "qa_items": len(qa),
                           "validation_removed_as_contaminated": val_removed,
                           "qa_removed_as_contaminated": qa_removed}
        details[key] = {"runs": runs, "curation_counts": counts}
    top = max(s.junk_shares)
    criteria = [stats.criterion(f"tokens-to-target speed-up at junk share {top:g}", per_share[top]["speedup"], 4.0)]
    headline = {"metric": "tokens for the raw run to reach its final clean-validation loss / tokens for the curated "
                          "run to reach it, same seed (higher = faster convergence)",
                "goal": ">= 4x (the quoted Nemotron data claim)", "verdict": stats.overall(criteria),
                "criteria": criteria, "by_junk_share": {f"{j:g}": v for j, v in per_share.items()},
                "qa_chance": 0.25}
    plots = []
    for junk in s.junk_shares:
        key = f"junk_{junk:g}"
        runs = details[key]["runs"]
        plots.append(seed_plot(out / f"val_loss_{key}.png",
                               {n: [([e["tokens"] for e in r["evals"]], [e["val_loss"] for e in r["evals"]])
                                    for r in runs[n].values()] for n in runs},
                               xlabel="training tokens", ylabel="clean held-out loss (nats/token)",
                               title=f"Data claim, junk share {junk:g}: validation loss (band: seed min-max)"))
    plots.append(seed_plot(out / "speedup_vs_junk.png",
                           {"curated vs raw": [(list(s.junk_shares),
                                                [per_share[j]["speedup"]["per_seed"][i] or 0.0 for j in s.junk_shares])
                                               for i in range(len(seed_list))]},
                           xlabel="junk share of the raw crawl", ylabel="tokens-to-target speed-up", hline=4.0,
                           title="Data claim: speed-up vs junk share (dashed: 4x goal)"))
    plots.append(seed_plot(out / "qa_accuracy.png",
                           {n: [(list(s.junk_shares), [per_share[j][f"{n}_final_qa_acc"]["per_seed"][i]
                                                       for j in s.junk_shares]) for i in range(len(seed_list))]
                            for n in ("raw", "curated")},
                           xlabel="junk share of the raw crawl", ylabel="final QA accuracy (4 choices)", hline=0.25,
                           title="Data claim: downstream QA at the end of training (dashed: chance)"))
    plots.append(interval_plot(out / "verdict.png", criteria, title="Data claim: per-seed speed-up, mean, 95% CI"))
    return write_result(out, "data", headline, s, seed_list, details, plots, started, data_hashes=hashes,
                        disjointness=disjoint, tried_settings=TRIED,
                        rule="speed-up's 95% interval lies at or above 4x", gates=[])
