"""Claim `data`: a model pre-trained on curated data reaches the raw-data model's downstream accuracy in >= 4x
fewer tokens.

Nemotron's data claim is usually quoted as "~4x faster convergence" (research/data-curation.md §2.4). We test it
on a world where curation can matter downstream: FactWorld (`hytron.data.factworld`), a seeded crawl around
`entities x 3` facts, each stated `statements_per_fact` (30) times in >= 5 phrasings by clean pages, with a
pre-registered junk composition by tokens (`factworld.COMPOSITION`): 20% clean, 10% on-topic pages stating
a *wrong* value of the facts (one rumour per fact, the pages agreeing with each other), 35% unrelated junk
(gibberish, other languages, boilerplate, spam), 25% exact copies of ten pages (half of them wrong-fact
pages) with Zipf copy counts. Every document has a ground-truth label; no clean page is copied. Every seed
generates its own world, crawl and QA set.

Four arms, each packed with one tokenizer trained on the raw crawl:
  raw       the crawl as generated;
  pipeline  `hytron curate` (hytron.data.pipeline, profile `web`: language id, Gopher/C4 heuristics, exact
            and fuzzy dedup, quality buckets from classifiers trained on held-out reference pages, QA
            decontamination); its kept documents. It never sees the labels. It has no fact-consistency
            step, so wrong-fact pages (ordinary prose) pass it unless a heuristic happens to catch them;
            the record reports what it removed per labelled kind. Measured at seed 0: `web` removes all
            gibberish, foreign, boilerplate, spam and extra copies, but also 17% of clean pages and 10% of
            wrong-fact pages (Gopher's duplicate-5-gram rule: a page naming one place in several sentences);
            `documents` removes the same junk and 0% of either. The quality buckets barely separate them
            (bucket >= 3: 59% of kept clean pages, 44% of kept wrong-fact pages), and no bucket removes;
  labels    the documents labelled clean (the oracle curation);
  random    a seeded random subsample of raw with the pipeline arm's (approximate) token count: selection
            versus merely less data.
Each arm trains a fresh `preset` model (hytron-tiny) through `hytron pretrain` once per token budget in
`budgets`, each a full schedule (warmup, stable, decay), and is scored at the end by 4-way log-likelihood QA
(one item per fact; distractors: the fact's rumour and two other values of the relation). The QA prompt
("Fact: the national animal of Veltria: the") is a frame no training text contains: every arm's texts are
scanned for each prompt's word `qa_ngram`-grams (with its answer; shorter items as a whole); an item found
(a sentence boundary can join "...national animal of X." and "The fox is...") is dropped and counted, and
the run stops if more than 10% are.

Tokens-to-target per seed: the target is the raw arm's QA at the largest budget; an arm's tokens to reach it
are interpolated linearly in log tokens across the crossing after which the arm stays at or above the
target (a noisy early point does not count); speed-up = largest budget / those tokens. An arm at or above
the target at every budget gets largest/smallest budget (a lower bound: the range cannot show more); an arm
that never reaches it gets 1.0 (an upper bound: it needs at least the raw arm's tokens).

RULE (pre-registered): met iff the lower bound of the 95% interval (log scale, over seeds) of the pipeline
arm's speed-up is >= 4; not met iff its upper bound is < 4; inconclusive otherwise.
Validity gates (any failing makes the verdict "not valid"):
  1. the label-curated arm's mean QA at the largest budget is >= 0.60 (the world is learnable at this size);
  2. the label-minus-raw QA gap at the largest budget has a 95% interval above 0 (curation can matter here).
Reported beside the headline: the label arm's and the random subsample's speed-ups, 1/(useful-token share)
(raw tokens / clean tokens: the speed-up that pure dilution would give), pipeline / labels, per-arm QA and
the share of items answered with the rumour, and the pipeline's removal rate per labelled kind.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from hytron.claims import stats
from hytron.claims.common import interval_plot, seed_plot, write_result
from hytron.data.factworld import COMPOSITION, KINDS
from hytron.data.filters import PROFILES
from hytron.pipelines.experiment import pretrain_tracked, run_shape
from hytron.train.recipe import TrainConfig

ARMS = ("raw", "pipeline", "labels", "random")
RULE = ("met iff the lower bound of the 95% interval (log scale, over seeds) of the pipeline arm's tokens-to-target "
        "speed-up over raw is >= 4 (target: raw's QA accuracy at the largest budget); not met iff its upper bound "
        "is < 4; inconclusive otherwise. Valid only if the label-curated arm's mean QA at the largest budget is "
        ">= 0.60 and its QA gap to raw there has a 95% interval above 0.")
QA_GATE = 0.60
GOAL = 4.0


@dataclass
class DataClaimSettings:
    # every arm's run; its `steps` and `eval_every` are set per run from `budgets` (one evaluation, at the end)
    run: TrainConfig = field(default_factory=run_shape)
    entities: int = 50  # x 3 relations = 150 facts
    statements_per_fact: int = 30
    composition: dict[str, float] = field(default_factory=lambda: dict(COMPOSITION))
    duplicated_pages: int = 10
    # tokens per run: 16x apart; the largest is about one epoch of the raw crawl (648k tokens at seed 0), so the
    # raw arm reads each fact's 30 true statements about once and the label arm ~7 times
    budgets: list[int] = field(default_factory=lambda: [40960, 81920, 163840, 327680, 655360])
    vocab_size: int = 1024
    qa_ngram: int = 7  # word n-gram of the QA-vs-training scan (prompt + answer: 6-8 words)
    profile: str = "web"  # `hytron curate` profile for the pipeline arm

    def __post_init__(self):
        if len(self.budgets) < 2 or sorted(set(self.budgets)) != list(self.budgets):
            raise ValueError(f"data claim: budgets must be >= 2 increasing token counts, got {self.budgets}")
        d = self.run.data
        if self.budgets[0] < d.batch_size * d.seq_len:
            raise ValueError(f"data claim: budgets[0] = {self.budgets[0]} is below one step "
                             f"({d.batch_size} x {d.seq_len} tokens)")
        if self.profile not in PROFILES:
            raise ValueError(f"data claim: profile must be one of {list(PROFILES)}, got {self.profile!r}")


# FULL, measured with budgets up to 524,288 (this design, seed 0, one torch thread, 2-core machine shared with ~5
# other jobs, load 5-7): 1,552 s for the seed (curation 10 s; steps 0.31-0.42 s, vs 0.115 s for the same step on
# the idle machine). At these budgets (+25% tokens): ~32 min per seed under that load, so 3 seeds with --jobs 2
# --threads 1 take ~64 min loaded and ~22 min on two idle cores (extrapolated, not measured).
FULL = DataClaimSettings(run=run_shape(batch_size=8, seq_len=128))
QUICK = DataClaimSettings(entities=8, statements_per_fact=6, duplicated_pages=4, budgets=[512, 1024, 2048, 4096],
                          vocab_size=512, run=run_shape(batch_size=4, seq_len=64, warmup_steps=2))
TRIED = [{"design": "this design with budgets 32k-512k tokens, 1 seed (seed 0)",
          "note": "QA at 512k: raw 0.449, pipeline 0.483, labels 0.728, random 0.442; speed-ups: pipeline 2.15x, "
                  "labels 4.54x, random 1.0x (not reached); 1/useful-token share 7.45x; not valid with 1 seed"},
         {"design": "TinyWeb at junk shares 0.33/0.8/0.9, loss-based speed-up, 2 arms",
          "note": "replaced (issue 22): copies of clean pages were junk kinds, QA at chance, templated validation"},
         {"design": "QA prompt 'Question: {place}, national animal?\\nAnswer:' and four other frames that separate "
                    "the place from the answer", "note": "0.25-0.32 on the label arm after 512k tokens (chance "
                    "0.25) while the training phrasing gave 0.91: hytron-tiny answers only from a local cue"}]


# ---- tokens to target -------------------------------------------------------------------------------------------
def tokens_to_target(tokens: list[float], acc: list[float], target: float) -> tuple[float | None, str]:
    """Tokens at which `acc` reaches `target` for good: linear in log tokens across the last crossing from below.
    Returns (tokens, "reached"), (tokens[0], "at_smallest") or (None, "not_reached")."""
    below = [i for i, a in enumerate(acc) if a < target]
    if not below:
        return float(tokens[0]), "at_smallest"
    i = below[-1]
    if i == len(acc) - 1:
        return None, "not_reached"
    lo, hi = math.log(tokens[i]), math.log(tokens[i + 1])
    frac = (target - acc[i]) / (acc[i + 1] - acc[i])
    return math.exp(lo + frac * (hi - lo)), "reached"


def speedup(tokens: list[float], arm_acc: list[float], raw_acc: list[float]) -> tuple[float, str]:
    """Largest budget / the arm's tokens to reach raw's final accuracy, censored at the budget range (see the
    module docstring): (value, status)."""
    t, status = tokens_to_target(tokens, arm_acc, raw_acc[-1])
    if status == "not_reached":
        return 1.0, status
    return tokens[-1] / t, status


# ---- one seed ---------------------------------------------------------------------------------------------------
def _qa_scores(scorer, items: list[dict]) -> dict:
    """4-way QA by summed log-likelihood: accuracy and the share of items answered with the rumour."""
    pairs = [(it["question"], " " + c) for it in items for c in it["choices"]]
    lps = [lp for lp, _ in scorer.loglikelihood(pairs)]
    correct = rumour = k = 0
    for it in items:
        n = len(it["choices"])
        best = max(range(n), key=lambda j: lps[k + j])
        k += n
        correct += best == it["label"]
        rumour += it["choices"][best] == it["rumour"]
    return {"qa_acc": correct / len(items), "qa_rumour": rumour / len(items)}


def _arms(d: Path, s: DataClaimSettings, seed: int, log) -> tuple[dict[str, list[dict]], dict]:
    """The crawl, its curation by the pipeline and by the labels, and the random subsample: {arm: docs}, info."""
    from hytron.data import factworld
    from hytron.data.curate_config import load_curate_config
    from hytron.data.document import approx_tokens
    from hytron.data.io import read_jsonl
    from hytron.data.pipeline import curate
    from hytron.data.writers import iter_records

    world = d / "factworld"
    if not (world / "factworld.json").is_file():
        cfg = factworld.FactWorldConfig(entities=s.entities, statements_per_fact=s.statements_per_fact,
                                        composition=dict(s.composition), duplicated_pages=s.duplicated_pages)
        factworld.generate(world, cfg, seed)
    raw = read_jsonl(world / "corpus" / "crawl.jsonl")
    labels = factworld.read_labels(world)
    ccfg = load_curate_config(None, {"profile": s.profile, "executor": {"workers": 1},
                                     "quality": {"reference": [str(world / "reference" / "reference.jsonl")]},
                                     "decontam": {"eval_files": [str(world / "evals" / "qa.jsonl")]}})
    manifest = curate([world / "corpus"], d / "curated", ccfg, progress=False)
    kept = list(iter_records(d / "curated", "kept"))
    kept_ids = {r["id"] for r in kept}
    arms = {"raw": raw, "pipeline": [{"id": r["id"], "text": r["text"], "source": r["source"]} for r in kept],
            "labels": [r for r in raw if labels[r["id"]]["kind"] == "clean"]}
    want = sum(approx_tokens(r["text"]) for r in arms["pipeline"])
    shuffled = list(raw)
    random.Random(f"data-claim-random-{seed}").shuffle(shuffled)
    subsample, tokens = [], 0
    for r in shuffled:
        if tokens >= want:
            break
        subsample.append(r)
        tokens += approx_tokens(r["text"])
    arms["random"] = subsample
    # what the pipeline removed, per labelled kind (docs), and the quality bucket of what it kept
    removed = {k: [0, 0] for k in KINDS}
    buckets: dict[str, list[int]] = {k: [] for k in KINDS}
    for r in raw:
        kind = labels[r["id"]]["kind"]
        removed[kind][1] += 1
        removed[kind][0] += r["id"] not in kept_ids
    for r in kept:
        if r.get("quality_bucket") is not None:
            buckets[labels[r["id"]]["kind"]].append(r["quality_bucket"])
    info = {"pipeline_removed_share": {k: (a / n if n else None) for k, (a, n) in removed.items()},
            "pipeline_kept_mean_bucket": {k: (sum(v) / len(v) if v else None) for k, v in buckets.items()},
            "pipeline_removed_by_step": manifest["removed_by_step"], "pipeline_counts": manifest["counts"]}
    log("arms: " + ", ".join(f"{a} {len(v)} docs" for a, v in arms.items())
        + "; pipeline removed " + ", ".join(f"{k} {v:.0%}" for k, v in info["pipeline_removed_share"].items()
                                            if v is not None))
    return arms, info


def run_seed(out: Path, s: DataClaimSettings, seed: int, log=print) -> dict:
    """One seed: FactWorld(seed), the four arms, one run per arm and budget; QA at the end of each run."""
    from hytron.data.io import read_jsonl, write_jsonl
    from hytron.data.mix import single_component_blend
    from hytron.eval.scoring import Scorer
    from hytron.packing import pack
    from hytron.tokenizer import Tokenizer

    t0 = time.perf_counter()
    d = Path(out) / f"seed{seed}"
    arms, info = _arms(d, s, seed, log)
    qa = read_jsonl(d / "factworld" / "evals" / "qa.jsonl")
    # held out: the frame ("Fact: ...:") is in no page, and an item whose prompt + answer shares a word
    # `qa_ngram`-gram with any arm's training text is dropped (e.g. "...national animal of X. The fox is...")
    n_items = len(qa)
    overlap = {}
    for a, docs in arms.items():
        qa, overlap[a] = stats.decontaminate(qa, lambda q: f"{q['question']} {q['answer']}",
                                             [r["text"] for r in docs], s.qa_ngram)
    if len(qa) < 0.9 * n_items:
        raise RuntimeError(f"data claim, seed {seed}: {n_items - len(qa)} of {n_items} QA items share a word "
                           f"{s.qa_ngram}-gram with training text ({overlap}); the QA frame is not held out")
    after = {a: stats.decontaminate(qa, lambda q: f"{q['question']} {q['answer']}", [r["text"] for r in docs],
                                    s.qa_ngram)[1] for a, docs in arms.items()}
    assert not any(after.values()), after
    tok_dir = d / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        Tokenizer.train((r["text"] for r in arms["raw"]), vocab_size=s.vocab_size).save(tok_dir)
    tok = Tokenizer.load(tok_dir)
    packed, arm_tokens = {}, {}
    for a, docs in arms.items():
        write_jsonl(docs, d / "arms" / a / "docs.jsonl")
        packed[a] = d / "packed" / a
        if not (packed[a] / "index.json").is_file():
            pack(single_component_blend([str(d / "arms" / a)], validation_fraction=0.0, seed=seed), tok, packed[a])
        arm_tokens[a] = json.loads((packed[a] / "index.json").read_text())["splits"]["train"]["num_tokens"]

    def evaluate(model) -> dict:
        return _qa_scores(Scorer(model, tok), qa)

    per_step = s.run.data.batch_size * s.run.data.seq_len
    results: dict[str, dict[str, list]] = {}
    for a in ARMS:
        results[a] = {"tokens": [], "qa_acc": [], "qa_rumour": [], "final_loss": []}
        for budget in s.budgets:
            steps = max(1, budget // per_step)
            warmup = min(s.run.optim.warmup_steps, max(1, steps // 10))
            ls = replace(s.run, steps=steps, eval_every=steps, seed=seed,
                         optim=replace(s.run.optim, warmup_steps=warmup))
            run = pretrain_tracked(packed[a], tok.vocab_size, ls, evaluate, out=d / "runs" / f"{a}-{budget}",
                                   label=f"s{seed} {a} {budget}", log=log)
            last = run["evals"][-1]
            results[a]["tokens"].append(steps * per_step)
            results[a]["qa_acc"].append(last["qa_acc"])
            results[a]["qa_rumour"].append(last["qa_rumour"])
            results[a]["final_loss"].append(run["train"][-1]["loss"] if run["train"] else None)
    hashes = {a: stats.content_hash(r["text"] for r in docs) for a, docs in arms.items()}
    hashes["qa"] = stats.content_hash(f"{q['question']} {q['answer']}" for q in qa)
    return {"seed": seed, "data_hash": hashes, "arm_tokens": arm_tokens,
            "useful_token_share": arm_tokens["labels"] / arm_tokens["raw"], "results": results,
            "qa_removed_as_overlapping": overlap, "qa_overlap_after": after, "qa_items": len(qa),
            **info, "seconds": round(time.perf_counter() - t0, 1)}


# ---- all seeds --------------------------------------------------------------------------------------------------
def summarize(out: Path, s: DataClaimSettings, records: dict[int, dict], started: float, log=print) -> dict:
    seeds = sorted(records)
    recs = [records[k] for k in seeds]
    sp: dict[str, list] = {a: [] for a in ARMS if a != "raw"}
    status: dict[str, list] = {a: [] for a in sp}
    for r in recs:
        res = r["results"]
        for a in sp:
            v, st = speedup(res[a]["tokens"], res[a]["qa_acc"], res["raw"]["qa_acc"])
            sp[a].append(v)
            status[a].append(st)
    final = {a: [r["results"][a]["qa_acc"][-1] for r in recs] for a in ARMS}
    rumour = {a: [r["results"][a]["qa_rumour"][-1] for r in recs] for a in ARMS}
    criteria = [stats.criterion("pipeline-curated tokens-to-target speed-up over raw",
                                stats.log_estimate(sp["pipeline"]), GOAL)]
    label_gap = stats.difference(final["labels"], final["raw"])
    label_mean = sum(final["labels"]) / len(final["labels"])
    gates = [stats.gate("label-curated QA at the largest budget", label_mean >= QA_GATE,
                        {"mean": label_mean, "per_seed": final["labels"]},
                        f"mean over seeds >= {QA_GATE} (chance 0.25)"),
             stats.gate("label-curated minus raw QA at the largest budget", bool(label_gap["ci95"])
                        and label_gap["ci95"][0] > 0, label_gap, "95% interval above 0")]
    beside = {
        "labels_speedup": stats.log_estimate(sp["labels"]),
        "random_subsample_speedup": stats.log_estimate(sp["random"]),
        "inverse_useful_token_share": stats.log_estimate([1 / r["useful_token_share"] for r in recs]),
        "pipeline_over_labels": stats.log_estimate([p / q for p, q in zip(sp["pipeline"], sp["labels"])]),
        "speedup_status": status,
        "final_qa_acc": {a: stats.estimate(final[a]) for a in ARMS},
        "final_qa_gap_vs_raw": {a: stats.difference(final[a], final["raw"]) for a in ARMS if a != "raw"},
        "final_qa_rumour_share": {a: stats.estimate(rumour[a]) for a in ARMS},
        "pipeline_removed_share": {k: stats.estimate([r["pipeline_removed_share"][k] for r in recs])
                                   for k in KINDS},
        "pipeline_kept_mean_bucket": {k: [r["pipeline_kept_mean_bucket"][k] for r in recs] for k in KINDS},
    }
    headline = {"metric": "tokens for the raw arm to reach its QA accuracy at the largest budget / tokens for the "
                          "pipeline-curated arm to reach it (separate full-schedule runs per budget, log-token "
                          "interpolation), per seed; geometric mean and log-scale 95% interval",
                "goal": f">= {GOAL:g}x (the quoted Nemotron data claim)", "criteria": criteria, "beside": beside,
                "qa_chance": 0.25, "budgets": recs[0]["results"]["raw"]["tokens"]}
    plots = [seed_plot(out / "qa_vs_tokens.png",
                       {a: [(r["results"][a]["tokens"], r["results"][a]["qa_acc"]) for r in recs] for a in ARMS},
                       xlabel="training tokens (one full-schedule run each)", ylabel="QA accuracy (4 choices)",
                       title="Data claim: QA after each run (dashed: chance; band: seed min-max)", logx=True,
                       hline=0.25),
             seed_plot(out / "rumour_vs_tokens.png",
                       {a: [(r["results"][a]["tokens"], r["results"][a]["qa_rumour"]) for r in recs] for a in ARMS},
                       xlabel="training tokens", ylabel="share of QA items answered with the rumour",
                       title="Data claim: answers taken from the wrong-fact pages", logx=True),
             interval_plot(out / "verdict.png", criteria + [stats.criterion("label-curated speed-up (beside)",
                                                                            beside["labels_speedup"], GOAL)],
                           title="Data claim: per-seed speed-up, geometric mean, 95% CI (log scale)")]
    hashes = {f"seed {k}": records[k]["data_hash"] for k in seeds}
    disjoint = {f"seed {k}/qa": records[k]["qa_overlap_after"] for k in seeds}
    details = {f"seed {k}": {x: v for x, v in records[k].items() if x not in ("data_hash", "settings")}
               for k in seeds}
    result = write_result(out, "data", headline, s, seeds, details, plots, started, data_hashes=hashes,
                          disjointness=disjoint, tried_settings=TRIED, rule=RULE, gates=gates)
    log(f"data claim: pipeline speed-up {criteria[0]['mean']} {criteria[0]['ci95']}, gates "
        f"{[g['passed'] for g in gates]} -> {result['verdict']}")
    return result
