"""Curation steps as data: per phase, the named steps in the order they run, one signature per table; stats, the
manifest and the `step` field of removed records take their names from these tables (`STEPS`).

  STAGE_STEPS   phase A, each document of a shard:          step(doc: Doc, ctx: Context) -> Drop | None
  SCORE_STEPS   phase A, a shard's survivors at once:       step(docs: list[Doc], ctx: Context) -> None
  DECIDE_STEPS  phase B, survivors of all shards in order:  step(d: Decision) -> {index: Drop}
  FINISH_STEPS  phase C, a shard's kept documents at once:  step(docs: list[Doc], ctx: Context) -> None

A step that removes answers `None` (keep) or a `Drop(reason, score, detail)`, and a document one step removed is
seen by no later step; the others (`removes=False`, and every batch step) rewrite text or record attributes.
`read` (input the readers could not use) and `error` (a step raised on this document) come first in `STEPS`:
they are records, not steps. A step that is switched off in the config keeps everything and records nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from hytron.data import dedup, filters, pii
from hytron.data.curate_config import CurateConfig
from hytron.data.document import approx_tokens
from hytron.data.quality import QualityModel, assign_buckets, percentile_thresholds
from hytron.data.rephrase import make_rephraser
from hytron.data.textview import View, prose_view

if TYPE_CHECKING:
    from hytron.data.decontam import EvalIndex
    from hytron.data.readers import Shard


class Drop(NamedTuple):
    reason: str
    score: float | None = None
    detail: str = ""


@dataclass
class Context:
    """What every task of one run shares, loaded once from the run's plan and passed to each step: the resolved
    config, the shards and stage tasks, and the models (eval n-gram index, quality classifiers, MinHash)."""

    out: Path
    cfg: CurateConfig
    shards: list[Shard]
    tasks: list[list[int]]  # stage tasks: groups of shards read in one pass
    eval_index: EvalIndex | None
    quality: QualityModel | None
    minhash: dedup.MinHasher


@dataclass
class Doc:
    """A document as steps see it: text they may rewrite, attributes they record (`meta` in the output), and what
    they leave for later: the prose view and dedup keys (phase A), PII redactions and rephrasings (phase C)."""

    text: str
    attrs: dict
    id: str = ""
    source: str = ""
    bucket: int | None = None  # quality bucket (phase C)
    view: View | None = None
    exact: str | None = None
    shingles: np.ndarray | None = None
    signature: np.ndarray | None = None
    redacted: dict[str, int] = field(default_factory=dict)  # PII kind -> redactions
    synthetic: list[dict] = field(default_factory=list)  # records for synthetic/


@dataclass
class Decision:
    """What phase B steps see: the survivors' side records (input order), a loader for their MinHash signatures
    and shingles, which are still active, and their quality buckets with the score thresholds that made them."""

    cfg: CurateConfig
    side: list[dict]
    load_hashes: Callable[[], tuple[np.ndarray, list[np.ndarray]]]
    active: np.ndarray = field(init=False)
    buckets: list[int | None] = field(init=False)
    thresholds: dict | None = None

    def __post_init__(self):
        self.active = np.ones(len(self.side), dtype=bool)
        self.buckets = [None] * len(self.side)


class Step(NamedTuple):
    name: str
    run: Callable
    removes: bool = True


# ---- phase A -------------------------------------------------------------------------------------------------------


def repair(doc: Doc, ctx: Context) -> None:
    """Unicode repair (ftfy, when `unicode_repair`), then the prose view the later steps judge."""
    if ctx.cfg.unicode_repair:
        doc.text, fixed = filters.repair_unicode(doc.text)
        if fixed:
            doc.attrs["unicode_repaired"] = True
    doc.view = prose_view(doc.text)
    if doc.view.code_words:
        doc.attrs["code_share"] = round(doc.view.code_share, 4)


def language(doc: Doc, ctx: Context) -> Drop | None:
    cfg = ctx.cfg
    if not cfg.language.enabled:
        return None
    # judged on the prose: code examples are not a language (CLD2 reads `def f(x):` as noise)
    text = doc.view.prose if len(doc.view.prose.split()) >= 20 else doc.text
    (keep, reason, score), code, conf = filters.identify_language(text, cfg.language)
    doc.attrs.update(language=code, language_score=conf)
    return None if keep else Drop(reason, score)


def decontamination(doc: Doc, ctx: Context) -> Drop | None:
    hit = ctx.eval_index.check(doc.text) if ctx.eval_index is not None else None
    return Drop("eval_overlap", hit[1], hit[0]) if hit else None


def measure(doc: Doc, ctx: Context) -> None:
    """Token count, and the profile's heuristic verdict: recorded here, applied in phase B (`heuristics`)."""
    doc.attrs["tokens"] = approx_tokens(doc.text)
    if ctx.cfg.heuristics.enabled:
        keep, reason, score = filters.heuristic_verdict(doc.text, ctx.cfg.heuristics, ctx.cfg.profile, doc.view)
        doc.attrs["heuristic"] = None if keep else [reason, score]


STAGE_STEPS = (Step("repair", repair, removes=False), Step("language", language),
               Step("decontamination", decontamination), Step("measure", measure, removes=False))


def quality_scores(docs: list[Doc], ctx: Context) -> None:
    """Every quality classifier's score, in one batch (the classifiers share one vectorisation)."""
    if ctx.quality is None or not docs:
        return
    scores = ctx.quality.score([d.text for d in docs])
    for j, doc in enumerate(docs):
        doc.attrs["quality_scores"] = {name: round(float(v[j]), 6) for name, v in scores.items()}


def dedup_keys(docs: list[Doc], ctx: Context) -> None:
    """The exact-dedup key; the word n-gram shingle hashes and their MinHash signature for fuzzy dedup."""
    cfg = ctx.cfg.dedup
    for doc in docs:
        doc.exact = dedup.exact_key(doc.text) if cfg.exact else None
        if cfg.fuzzy:
            doc.shingles = dedup.shingle_hashes(doc.text, cfg.ngram)
            doc.signature = ctx.minhash.signature(doc.shingles)


SCORE_STEPS = (Step("quality", quality_scores), Step("dedup_keys", dedup_keys))


# ---- phase B ------------------------------------------------------------------------------------------------------


def quality_buckets(d: Decision) -> dict[int, Drop]:
    """Buckets 0-4 from token-weighted percentiles of each classifier's scores, the best bucket of any
    classifier (Nemotron-CC); with no quality scores every bucket stays None."""
    names = sorted(d.side[0]["quality"]) if d.side and d.side[0]["quality"] else []
    if names:
        tokens = np.array([s["tokens"] for s in d.side])
        scores = {k: np.array([s["quality"][k] for s in d.side], dtype=np.float32) for k in names}
        d.thresholds = {k: percentile_thresholds(v, tokens) for k, v in scores.items()}
        d.buckets = [int(b) for b in assign_buckets(scores, d.thresholds)]
    return {}


def heuristics(d: Decision) -> dict[int, Drop]:
    """The profile's heuristic verdict (measured in phase A), except for buckets from
    `quality.skip_heuristics_from_bucket` up (Nemotron-CC: no heuristic filters on high-quality text)."""
    skip = d.cfg.quality.skip_heuristics_from_bucket
    out = {}
    for k, s in enumerate(d.side):
        h = s["heuristic"]
        if h and d.active[k] and not (skip is not None and d.buckets[k] is not None and d.buckets[k] >= skip):
            out[k] = Drop(h[0], h[1])
    return out


def exact_dedup(d: Decision) -> dict[int, Drop]:
    if not d.cfg.dedup.exact:
        return {}
    keys = [s["exact"] if d.active[k] else None for k, s in enumerate(d.side)]
    return {x.index: Drop("exact_duplicate", 1.0, d.side[x.kept]["id"]) for x in dedup.exact_duplicates(keys)}


def fuzzy_dedup(d: Decision) -> dict[int, Drop]:
    cfg = d.cfg.dedup
    if not cfg.fuzzy or len(d.side) < 2:
        return {}
    sigs, shingles = d.load_hashes()
    return {x.index: Drop("near_duplicate", round(x.score, 4), d.side[x.kept]["id"])
            for x in dedup.fuzzy_duplicates(sigs, shingles, cfg.bands, cfg.rows, cfg.threshold, d.active)}


DECIDE_STEPS = (Step("quality_buckets", quality_buckets, removes=False), Step("heuristics", heuristics),
                Step("exact_dedup", exact_dedup), Step("fuzzy_dedup", fuzzy_dedup))


# ---- phase C ------------------------------------------------------------------------------------------------------


def redact_pii(docs: list[Doc], ctx: Context) -> None:
    if ctx.cfg.pii.enabled:
        for doc in docs:
            doc.text, doc.redacted = pii.redact(doc.text, ctx.cfg.pii.kinds)
            if doc.redacted:
                doc.attrs["pii_redacted"] = doc.redacted


def rephrase(docs: list[Doc], ctx: Context) -> None:
    """Nemotron-CC rephrasing of the (redacted) kept text by quality bucket: `low_styles` for `low_buckets`,
    `high_styles` for `high_buckets`; at most `max_docs_per_shard` documents of a shard."""
    cfg = ctx.cfg.rephrase
    if not cfg.enabled:
        return
    rephraser = make_rephraser(cfg)
    n_rephrased = 0
    for doc in docs:
        if cfg.max_docs_per_shard is not None and n_rephrased >= cfg.max_docs_per_shard:
            break
        styles = (cfg.low_styles if doc.bucket in cfg.low_buckets else
                  cfg.high_styles if doc.bucket in cfg.high_buckets else [])
        n_rephrased += bool(styles)
        for style in styles:
            new = rephraser.rephrase(doc.text, style)
            if new:
                doc.synthetic.append({"id": f"{doc.id}#{style}", "text": new,
                                      "source": f"{doc.source}/synthetic-{style}", "quality_bucket": doc.bucket,
                                      "meta": {"parent_id": doc.id, "style": style, "generator": rephraser.name}})


FINISH_STEPS = (Step("pii", redact_pii), Step("rephrase", rephrase))

STEPS = ("read", "error", *(s.name for s in (*STAGE_STEPS, *DECIDE_STEPS) if s.removes))
