"""Curation steps as data: per phase, the named steps in the order they run; stats, the manifest and the
`step` field of removed records take their names from these lists (`STEPS`).

Every step answers `None` (keep) or a `Drop(reason, score, detail)`:
  STAGE_STEPS   per document, inside a shard: `check(doc: Staged, ctx) -> Drop | None`
  DECIDE_STEPS  global, over the survivors of all shards in input order: `run(d: Decision) -> {index: Drop}`;
                a document one step removed is no longer active for the next

`read` (input the readers could not use) and `error` (a step raised on this document) come first: they are
records, not steps. A step that is switched off in the config keeps everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from hytron.data import dedup, filters
from hytron.data.curate_config import CurateConfig
from hytron.data.textview import View


class Drop(NamedTuple):
    reason: str
    score: float | None = None
    detail: str = ""


@dataclass
class Staged:
    """A document inside phase A: its (repaired) text, prose view and the attributes steps record."""

    text: str
    view: View
    attrs: dict


@dataclass
class Decision:
    """What phase B steps see: the survivors' side records (input order), their quality buckets, which are
    still active, and a loader for their MinHash signatures and shingles."""

    cfg: CurateConfig
    side: list[dict]
    buckets: list[int | None]
    load_hashes: Callable[[], tuple[np.ndarray, list[np.ndarray]]]
    active: np.ndarray = field(init=False)

    def __post_init__(self):
        self.active = np.ones(len(self.side), dtype=bool)


class Step(NamedTuple):
    name: str
    run: Callable


# ---- phase A --------------------------------------------------------------------------------------------------


def language(doc: Staged, ctx: dict) -> Drop | None:
    cfg: CurateConfig = ctx["cfg"]
    if not cfg.language.enabled:
        return None
    # judged on the prose: code examples are not a language (CLD2 reads `def f(x):` as noise)
    text = doc.view.prose if len(doc.view.prose.split()) >= 20 else doc.text
    (keep, reason, score), code, conf = filters.identify_language(text, cfg.language)
    doc.attrs.update(language=code, language_score=conf)
    return None if keep else Drop(reason, score)


def decontamination(doc: Staged, ctx: dict) -> Drop | None:
    hit = ctx["eval_index"].check(doc.text) if "eval_index" in ctx else None
    return Drop("eval_overlap", hit[1], hit[0]) if hit else None


STAGE_STEPS = (Step("language", language), Step("decontamination", decontamination))


# ---- phase B --------------------------------------------------------------------------------------------------


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


DECIDE_STEPS = (Step("heuristics", heuristics), Step("exact_dedup", exact_dedup), Step("fuzzy_dedup", fuzzy_dedup))

STEPS = ("read", "error", *(s.name for s in STAGE_STEPS), *(s.name for s in DECIDE_STEPS))
