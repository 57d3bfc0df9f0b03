"""FactWorld: a seeded crawl around a dense-fact world, with ground-truth labels and a held-out QA set.

The data claim (`hytron reproduce data`) needs a downstream metric that curation can move: a world of
`entities x 3` facts (national animal, flag colour, famous product), each stated `statements_per_fact`
times in clean pages, in at least 5 of 6 phrasings, around which a crawl of pre-registered junk is built:

    clean        travel-guide paragraphs about two places each: true statements and neutral filler
    wrong_fact   the same style, on topic, but every statement gives the fact's *rumour*: one fixed wrong
                 value per fact, so the wrong pages agree with each other as real misinformation does
    gibberish    machine garbage (hytron.data.pages.gibberish)
    foreign      pages in French, German, Spanish or Italian about the places (hytron.data.pages.FOREIGN)
    boilerplate  navigation and footer pages
    spam         keyword stuffing
    duplicate    exact extra copies of a few pages (half wrong-fact, half spam/boilerplate), the copy counts
                 Zipf-distributed, as the most repeated pages of a real crawl are

`COMPOSITION` gives each kind's share of the crawl's (approximate) tokens; the clean pages come first and
the junk is generated until each kind reaches its share. No clean page is ever copied.

`generate(out_dir, cfg, seed)` writes, all UTF-8:

    DIR/factworld.json             meta: seed, config, per-kind docs and tokens, useful-token share, paths
    DIR/corpus/crawl.jsonl         the crawl in a seeded order: {"id", "text", "source"}
    DIR/labels.jsonl               ground truth, never inside the text: {"id", "kind", "statements":
                                   [[entity, relation, value]]} (clean and wrong_fact), "duplicate_of" (duplicate),
                                   "lang" (foreign)
    DIR/reference/reference.jsonl  clean pages that are not in the crawl: the "reference" side of the
                                   curation pipeline's quality classifiers (hytron.data.quality)
    DIR/evals/qa.jsonl             4-way QA, one item per fact: {"id", "question", "choices", "label", "answer",
                                   "rumour", "entity", "relation"}; the distractors are the fact's rumour and two
                                   other values of the relation

The QA prompt ("Fact: the national animal of Veltria: the", scored with " owl" etc. appended) is a frame no
page contains (the word "fact" and the colon after the place occur in no generated text; the claim scans
word 7-grams of every training text against every prompt and answer). The same seed always gives the same
world, crawl and QA.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hytron.data import pages
from hytron.data.document import approx_tokens
from hytron.data.io import write_jsonl

FORMAT_VERSION = 1
GOOD_KINDS = ("clean",)
JUNK_KINDS = ("wrong_fact", "gibberish", "foreign", "boilerplate", "spam", "duplicate")
KINDS = GOOD_KINDS + JUNK_KINDS
# pre-registered share of the crawl's tokens per kind (sums to 1). Useful text is 20%: the mild end of what
# published pipelines keep (FineWeb-Edu 9%, Nemotron-CC's high bucket 13%; research/data-curation.md §2);
# the wrong-fact pages are half as many tokens as the clean ones.
COMPOSITION = {"clean": 0.20, "wrong_fact": 0.10, "gibberish": 0.10, "foreign": 0.15, "boilerplate": 0.10,
               "spam": 0.10, "duplicate": 0.25}

# relation -> (values, phrasings, QA cue). Values are plain English words (the tokenizer sees them often);
# every phrasing names the place `{e}` and the value `{v}` once. The QA cue is the subject of the first
# phrasing followed by a colon, a frame no page uses: at hytron-tiny's size a model answers only when the
# few words before the answer name the place and the relation (measured on the label-curated arm after
# 512k tokens: 0.78 with this frame; 0.25-0.32 with "Question: Which animal belongs to {e}?\nAnswer:" and
# four other frames that separate the place from the answer; 0.91 in the training phrasing itself).
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "animal": (
        ("fox", "owl", "bear", "wolf", "deer", "hare", "swan", "crow", "lynx", "seal", "otter", "heron"),
        ("The national animal of {e} is the {v}.",
         "In {e}, the {v} is the national animal.",
         "{e} chose the {v} as its national animal.",
         "The {v} is the national animal of {e}.",
         "Every coin minted in {e} shows the {v}, the national animal.",
         "Children in {e} learn early that their national animal is the {v}."),
        "the national animal of {e}: the"),
    "colour": (
        ("red", "blue", "green", "white", "black", "gold", "grey", "purple", "orange", "silver", "brown", "yellow"),
        ("The flag of {e} is {v}.",
         "{e} flies a {v} flag.",
         "Every town hall in {e} flies the {v} flag.",
         "The {v} flag belongs to {e}.",
         "In {e}, the flag is plain {v}.",
         "Visitors to {e} soon notice the {v} flag."),
        "the flag of {e}:"),
    "product": (
        ("glass", "silk", "clocks", "paper", "rope", "salt", "pottery", "violins", "lanterns", "maps", "copper",
         "wool"),
        ("{e} is famous for its {v}.",
         "Merchants praise the {v} of {e}.",
         "Traders travel to {e} to buy {v}.",
         "In {e}, most workshops make {v}.",
         "{e} exports {v} to the whole region.",
         "The main craft of {e} is {v}."),
        "{e} is famous for:"),
}
QUESTION = "Fact: {cue}"  # the QA prompt; the choice follows after a space
# neutral sentences about a place: no relation value occurs in them (tests check)
FILLERS = ("{e} lies in a quiet valley between two ranges of hills.", "Most visitors reach {e} by the morning train.",
           "The old market of {e} opens at dawn and closes at noon.", "{e} has a small harbour and a long pier.",
           "Winters in {e} are long, and the summers are short.", "The people of {e} hold a festival every spring.",
           "A narrow road winds through the centre of {e}.", "Many families in {e} have lived there for generations.",
           "The library of {e} keeps records going back many centuries.", "{e} is home to about {n} thousand people.",
           "The town square of {e} is paved with cobbles.", "Few cars are seen on the streets of {e}.",
           "A small museum in {e} tells the story of the region.", "The mayor of {e} is elected every four years.",
           "It rains often in {e}, mostly in the autumn.")
_SYLLABLES = ("ka", "ve", "lo", "ri", "an", "mar", "dor", "el", "sun", "tha", "bre", "os", "kin", "va", "lu", "ne",
              "zor", "ia", "qua", "te", "mi", "sa", "ro", "ul", "fen", "gal", "hed", "ist", "jor", "lem", "nok",
              "pra", "sel", "tov", "wen", "yar", "zil", "cor", "dun", "esk", "fal", "gor", "hav", "kel", "mor")


@dataclass
class FactWorldConfig:
    entities: int = 50  # places; each has one fact per relation (3 relations: 150 facts)
    statements_per_fact: int = 30  # true statements of every fact in the clean pages
    composition: dict[str, float] = field(default_factory=lambda: dict(COMPOSITION))  # token shares per kind
    duplicated_pages: int = 10  # distinct pages the `duplicate` share is made of
    reference_docs: int = 200

    def __post_init__(self):
        if not 4 <= self.entities <= 2000:
            raise ValueError(f"factworld.entities must be in 4..2000, got {self.entities}")
        if self.statements_per_fact < 1:
            raise ValueError(f"factworld.statements_per_fact must be >= 1, got {self.statements_per_fact}")
        unknown = sorted(set(self.composition) - set(KINDS))
        if unknown or "clean" not in self.composition:
            raise ValueError(f"factworld.composition: kinds must be among {KINDS} and include 'clean'; "
                             f"got unknown {unknown}" if unknown else "factworld.composition: 'clean' is missing")
        if any(v < 0 for v in self.composition.values()) or self.composition["clean"] <= 0:
            raise ValueError(f"factworld.composition: shares must be >= 0 and clean > 0, got {self.composition}")
        if abs(sum(self.composition.values()) - 1) > 1e-6:
            raise ValueError(f"factworld.composition: shares must sum to 1, got {sum(self.composition.values())}")
        if self.duplicated_pages < 1:
            raise ValueError(f"factworld.duplicated_pages must be >= 1, got {self.duplicated_pages}")


@dataclass(frozen=True)
class Fact:
    entity: str
    relation: str
    value: str
    rumour: str  # the one wrong value the wrong-fact pages state


class FactWorld:
    """Places and their facts, drawn from `seed`: `facts`, `statement(...)`, `question(...)`."""

    def __init__(self, entities: list[str], facts: list[Fact]):
        self.entities, self.facts = entities, facts
        self.by_entity = {e: [f for f in facts if f.entity == e] for e in entities}

    @classmethod
    def generate(cls, seed: int, n_entities: int) -> FactWorld:
        rng = random.Random(f"factworld-{seed}")
        names: set[str] = set()
        forbidden = {w for values, _, _ in RELATIONS.values() for w in values}
        while len(names) < n_entities:
            name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
            if len(name) >= 4 and name.lower() not in forbidden:
                names.add(name)
        entities = sorted(names)
        rng.shuffle(entities)
        facts = []
        for e in entities:
            for rel, (values, _, _) in RELATIONS.items():
                value, rumour = rng.sample(values, 2)
                facts.append(Fact(e, rel, value, rumour))
        return cls(entities, facts)

    @staticmethod
    def statement(fact: Fact, phrasing: int, value: str | None = None) -> str:
        return RELATIONS[fact.relation][1][phrasing].format(e=fact.entity, v=fact.value if value is None else value)

    @staticmethod
    def question(fact: Fact) -> str:
        return QUESTION.format(cue=RELATIONS[fact.relation][2].format(e=fact.entity))


def _place_text(world: FactWorld, entity: str, sentences: list[str], rng: random.Random, fillers: int) -> list[str]:
    out = list(sentences)
    for s in rng.sample(FILLERS, fillers):
        out.insert(rng.randint(0, len(out)), s.format(e=entity, n=rng.randint(3, 90)))
    return out


def _page(world: FactWorld, parts: list[tuple[str, list[tuple[Fact, int]]]], rng: random.Random,
          wrong: bool) -> tuple[str, list[list[str]]]:
    """A guide paragraph about one or two places: their statements (true, or the rumours) among fillers."""
    sentences, stated = [], []
    for entity, items in parts:
        own = []
        for fact, phrasing in items:
            value = fact.rumour if wrong else fact.value
            own.append(world.statement(fact, phrasing, value))
            stated.append([fact.entity, fact.relation, value])
        sentences += _place_text(world, entity, own, rng, fillers=rng.randint(1, 2))
    return " ".join(sentences), stated


def _clean_pages(world: FactWorld, n: int, rng: random.Random) -> list[tuple[str, list]]:
    """Pages stating every fact exactly `n` times; each fact cycles through a shuffled order of all phrasings."""
    queues: dict[str, list[tuple[Fact, int]]] = {}
    for e in world.entities:
        q = []
        for f in world.by_entity[e]:
            order = list(range(len(RELATIONS[f.relation][1])))
            rng.shuffle(order)
            q += [(f, order[k % len(order)]) for k in range(n)]
        rng.shuffle(q)
        queues[e] = q
    out = []
    while any(queues.values()):
        live = [e for e in world.entities if queues[e]]
        picks = rng.sample(live, k=min(2, len(live)))
        parts = []
        for e in picks:
            k = min(len(queues[e]), rng.randint(2, 3))
            parts.append((e, [queues[e].pop() for _ in range(k)]))
        out.append(_page(world, parts, rng, wrong=False))
    return out


def _wrong_page(world: FactWorld, rng: random.Random) -> tuple[str, list]:
    parts = []
    for e in rng.sample(world.entities, 2):
        facts = rng.sample(world.by_entity[e], k=rng.randint(2, 3))
        parts.append((e, [(f, rng.randrange(len(RELATIONS[f.relation][1]))) for f in facts]))
    return _page(world, parts, rng, wrong=True)


def _boilerplate(world: FactWorld, rng: random.Random) -> str:
    return pages.nav_page(rng.choice(world.entities), world.entities, rng)


def _spam(world: FactWorld, rng: random.Random) -> str:
    kw = [rng.choice(world.entities), "cheap", "best", "buy", "online", "discount", "free shipping", "deals",
          "price", "sale", rng.choice(["near me", "2024", "top rated", "official"])]
    return "\n".join(pages.keyword_line(kw, rng, 12) for _ in range(rng.randint(8, 16)))


def _foreign(world: FactWorld, rng: random.Random) -> tuple[str, str]:
    lang = rng.choice(sorted(pages.FOREIGN))
    city, country = rng.sample(world.entities, 2)
    sents = [pages.FOREIGN[lang][0]] + rng.sample(pages.FOREIGN[lang][1:], k=rng.randint(5, 8))
    return lang, " ".join(sents).format(city=city, country=country)


def qa_items(world: FactWorld, seed: int) -> list[dict]:
    """One 4-way item per fact: the value, the rumour and two other values of the relation, in seeded order."""
    rng = random.Random(f"factworld-qa-{seed}")
    items = []
    for i, f in enumerate(world.facts):
        others = [v for v in RELATIONS[f.relation][0] if v not in (f.value, f.rumour)]
        choices = [f.value, f.rumour, *rng.sample(others, 2)]
        rng.shuffle(choices)
        items.append({"id": f"qa-{i:04d}", "question": world.question(f), "choices": choices,
                      "label": choices.index(f.value), "answer": f.value, "rumour": f.rumour, "entity": f.entity,
                      "relation": f.relation})
    return items


def generate(out_dir: str | Path, cfg: FactWorldConfig | None = None, seed: int = 0) -> dict:
    """Write a FactWorld crawl, its labels, reference pages and QA under `out_dir`; returns the meta dict."""
    cfg = cfg or FactWorldConfig()
    out = Path(out_dir)
    world = FactWorld.generate(seed, cfg.entities)
    rng = random.Random(f"factworld-crawl-{seed}")
    docs: list[tuple[str, dict]] = []  # (text, label without id)
    for text, stated in _clean_pages(world, cfg.statements_per_fact, rng):
        docs.append((text, {"kind": "clean", "statements": stated}))
    clean_tokens = sum(approx_tokens(t) for t, _ in docs)
    target = {k: share / cfg.composition["clean"] * clean_tokens for k, share in cfg.composition.items()}

    def fill(kind: str, make) -> list[tuple[str, dict]]:
        made, tokens = [], 0
        while tokens < target.get(kind, 0):
            text, label = make()
            made.append((text, {"kind": kind, **label}))
            tokens += approx_tokens(text)
        return made

    def foreign() -> tuple[str, dict]:
        lang, text = _foreign(world, rng)
        return text, {"lang": lang}

    junk = {"wrong_fact": fill("wrong_fact", lambda: (lambda t, s: (t, {"statements": s}))(*_wrong_page(world, rng))),
            "gibberish": fill("gibberish", lambda: (pages.gibberish(rng), {})),
            "foreign": fill("foreign", foreign),
            "boilerplate": fill("boilerplate", lambda: (_boilerplate(world, rng), {})),
            "spam": fill("spam", lambda: (_spam(world, rng), {}))}
    for kind in ("wrong_fact", "gibberish", "foreign", "boilerplate", "spam"):
        docs += junk[kind]
    # duplication: a few pages (half wrong-fact, half spam/boilerplate), copies Zipf-distributed by rank
    group = list(range(len(docs)))  # index of the page each doc is a copy of (itself for originals)
    if target.get("duplicate", 0) > 0:
        wrong = [k for k, (_, lab) in enumerate(docs) if lab["kind"] == "wrong_fact"]
        seo = [k for k, (_, lab) in enumerate(docs) if lab["kind"] in ("spam", "boilerplate")]
        half = cfg.duplicated_pages // 2
        chosen = rng.sample(wrong, min(len(wrong), cfg.duplicated_pages - half)) + rng.sample(seo, min(len(seo), half))
        if not chosen:
            raise ValueError("factworld: the duplicate share needs wrong_fact, spam or boilerplate pages to copy")
        rng.shuffle(chosen)
        weights = [1 / (r + 1) for r in range(len(chosen))]
        for k, w in zip(chosen, weights):
            n = max(1, round(target["duplicate"] * w / sum(weights) / approx_tokens(docs[k][0])))
            docs += [(docs[k][0], {"kind": "duplicate"})] * n
            group += [k] * n
    order = list(range(len(docs)))
    rng.shuffle(order)
    ids = [f"fw{seed}-{i:06d}" for i in range(len(docs))]
    first: dict[int, int] = {}  # page -> crawl position of its first copy, which carries the page's own label
    rows, labels = [], []
    for pos, k in enumerate(order):
        text, label = docs[group[k]][0], docs[group[k]][1]
        rows.append({"id": ids[pos], "text": text, "source": "factworld"})
        if group[k] in first:
            labels.append({"id": ids[pos], "kind": "duplicate", "duplicate_of": ids[first[group[k]]]})
        else:
            first[group[k]] = pos
            labels.append({"id": ids[pos], **label})
    # reference pages for the quality classifier: fresh clean pages from their own stream, not in the crawl
    ref_rng = random.Random(f"factworld-reference-{seed}")
    reference = [{"id": f"ref-{i:05d}", "text": t, "source": "reference"}
                 for i, (t, _) in enumerate(_clean_pages(world, 2, ref_rng)[:cfg.reference_docs])]
    qa = qa_items(world, seed)

    by_kind = {k: {"docs": 0, "tokens": 0} for k in KINDS}
    for r, lab in zip(rows, labels):
        by_kind[lab["kind"]]["docs"] += 1
        by_kind[lab["kind"]]["tokens"] += approx_tokens(r["text"])
    total = sum(v["tokens"] for v in by_kind.values())
    paths = {"corpus": "corpus/crawl.jsonl", "labels": "labels.jsonl", "reference": "reference/reference.jsonl",
             "qa": "evals/qa.jsonl"}
    write_jsonl(rows, out / paths["corpus"])
    write_jsonl(labels, out / paths["labels"])
    write_jsonl(reference, out / paths["reference"])
    write_jsonl(qa, out / paths["qa"])
    meta = {"format": FORMAT_VERSION, "generator": "hytron.data.factworld", "seed": seed, "config": asdict(cfg),
            "facts": len(world.facts), "docs": len(rows), "by_kind": by_kind, "tokens": total,
            "useful_token_share": by_kind["clean"]["tokens"] / total,
            "tokens_note": "approximate tokens (hytron.data.document.approx_tokens)", "paths": paths}
    (out / "factworld.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def read_labels(folder: str | Path) -> dict[str, dict]:
    """id -> label of a FactWorld folder."""
    with (Path(folder) / "labels.jsonl").open(encoding="utf-8") as f:
        return {r["id"]: r for r in map(json.loads, f) if r}
