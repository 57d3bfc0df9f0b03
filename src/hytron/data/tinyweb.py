"""TinyWeb: a seeded synthetic web crawl with ground-truth labels and held-out evaluation sets.

`generate(out_dir, n_docs=20_000, seed=0)` (CLI: `hytron tinyweb --docs N --out DIR`) writes, all UTF-8:

    DIR/tinyweb.json                 meta: format version, seed, n_docs, counts per kind, these paths
    DIR/corpus/crawl-NNNNN.jsonl     the crawl, 5,000 docs per file: {"id", "text", "source", "url"}
    DIR/labels.jsonl                 ground truth, one line per corpus doc, never inside the text:
                                     {"id", "kind", ...}; kind is one of KINDS. Extra keys:
                                     duplicate_exact/duplicate_near: "duplicate_of" (id of the original),
                                     foreign: "lang"; pii: "pii" [{"type": email|phone|ip, "value"}],
                                     leak: "leaks" [eval item ids]; any good doc: "mojibake" true and
                                     "repaired_text" when its text was garbled (UTF-8 read as cp1252)
    DIR/reference/reference.jsonl    high-quality reference docs ("reference" side of the quality
                                     classifiers), not in the corpus: {"id", "text", "source"}
    DIR/evals/validation.jsonl       clean held-out text: {"id", "text"}
    DIR/evals/world_qa.jsonl         world-fact questions: {"id", "question", "answer", "subject", "relation"}
    DIR/evals/arithmetic.jsonl       {"id", "problem" ("What is 347 + 589?"), "answer" (int), "a", "op", "b"}

Held-out sets never occur in the corpus except inside the pages labelled `leak`, which exist to test
decontamination. Every world-fact question is answerable from the corpus: the subject has at least one
article (for n_docs >= ~3,000; smaller crawls cover the QA subjects first). The world itself is
`hytron.data.world.World.generate(seed)`, so more consistent text and QA can be made from the same seed.
Good kinds are `clean` and `pii` (kept, with PII redacted); all others are junk.
`evaluate(tinyweb_dir, curated_dir)` scores a curation run against these labels (per junk kind recall and
precision, good docs kept, PII redacted); `hytron curate` prints it when its input is a TinyWeb folder.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from hytron.data import pages
from hytron.data.io import write_jsonl
from hytron.data.world import World

FORMAT_VERSION = 1
DOCS_PER_FILE = 5000
GOOD_KINDS = ("clean", "pii")
JUNK_KINDS = ("boilerplate", "spam", "gibberish", "truncated", "foreign", "duplicate_exact",
              "duplicate_near", "leak")
KINDS = GOOD_KINDS + JUNK_KINDS
# share of each kind in the crawl (sums to 1)
PROPORTIONS = {"clean": 0.62, "pii": 0.05, "boilerplate": 0.05, "spam": 0.04, "gibberish": 0.03,
               "truncated": 0.04, "foreign": 0.04, "duplicate_exact": 0.04, "duplicate_near": 0.06, "leak": 0.03}
_SECTIONS = {"encyclopedia": "wiki.tinyweb.test", "school": "learn.tinyweb.test",
             "stories": "tales.tinyweb.test", "forum": "forum.tinyweb.test", "misc": "pages.tinyweb.test"}
_MOJIBAKE_SENTENCES = ("Visitors like the café on the square — it’s famous for crème brûlée.",
                       "The old guide calls it a naïve but charming place — well worth a visit.",
                       "Locals recommend the façade of the town hall; it’s lit at night.")


def _garble(text: str) -> str:
    """UTF-8 bytes misread as cp1252: the most common mojibake on the web."""
    return text.encode("utf-8").decode("cp1252")


def _evals(world: World, rng: random.Random, n_val: int, n_qa: int, n_arith: int):
    val = []
    for i in range(n_val):
        text = pages.article(world, rng) if i % 2 == 0 else pages.story(world, rng)
        val.append({"id": f"val-{i:05d}", "text": text})
    qa = []
    for i, f in enumerate(rng.sample(world.facts, k=min(n_qa, len(world.facts)))):
        q, a = world.question(f)
        qa.append({"id": f"qa-{i:05d}", "question": q, "answer": a, "subject": f.subject, "relation": f.relation})
    arith, seen = [], set()
    while len(arith) < n_arith:
        a, op, b = pages.arithmetic_problem(rng)
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        arith.append({"id": f"arith-{len(arith):05d}", "problem": f"What is {a} {op} {b}?",
                      "answer": pages.solve(a, op, b), "a": a, "op": op, "b": b})
    return val, qa, arith


def proportions(junk_share: float | None = None) -> dict[str, float]:
    """PROPORTIONS, or with the junk kinds rescaled to sum to `junk_share` (good kinds to the rest), keeping
    the mix within each side."""
    if junk_share is None:
        return dict(PROPORTIONS)
    if not 0 <= junk_share < 1:
        raise ValueError(f"junk_share must be in [0, 1), got {junk_share}")
    junk = sum(PROPORTIONS[k] for k in JUNK_KINDS)
    return {k: v * (junk_share / junk if k in JUNK_KINDS else (1 - junk_share) / (1 - junk))
            for k, v in PROPORTIONS.items()}


def generate(out_dir: str | Path, n_docs: int = 20_000, seed: int = 0, junk_share: float | None = None) -> dict:
    """Write a TinyWeb crawl of `n_docs` documents with labels and eval sets; returns the meta dict.
    `junk_share` sets the share of junk documents (default: PROPORTIONS, 0.33 junk)."""
    if n_docs < 1:
        raise ValueError(f"n_docs must be at least 1, got {n_docs}")
    shares = proportions(junk_share)
    out = Path(out_dir)
    world = World.generate(seed)
    rng = random.Random(f"tinyweb-{seed}")
    # evals come from their own random stream, so they are the same for every n_docs
    val, qa, arith = _evals(world, random.Random(f"tinyweb-evals-{seed}"), 300, 500, 500)
    banned = {(r["a"], r["op"], r["b"]) for r in arith}
    leak_items = [(f"{r['question']}", r["answer"], r["id"]) for r in qa]
    leak_items += [(r["problem"], str(r["answer"]), r["id"]) for r in arith]

    kinds = rng.choices(list(shares), weights=list(shares.values()), k=n_docs)
    # every entity gets an article (QA subjects first, so world-fact QA is answerable from the corpus)
    qa_subjects = {r["subject"] for r in qa}
    subjects = list(world.entities.values())
    rng.shuffle(subjects)
    subjects.sort(key=lambda e: e.id in qa_subjects)  # stable; pop() takes QA subjects first
    docs, labels, originals = [], [], []
    for i, kind in enumerate(kinds):
        if kind.startswith("duplicate") and not originals:
            kind = "clean"
        label: dict = {"id": f"tw-{i:08d}", "kind": kind}
        section = rng.choice(["forum", "misc"])
        if kind in GOOD_KINDS:
            sort = rng.choices(["article", "lesson", "story"], weights=[0.55, 0.22, 0.23])[0]
            if subjects and (sort == "article" or i % 3 == 0):
                text, sort = world.article(subjects.pop(), rng), "article"
            elif sort == "article":
                text = pages.article(world, rng)
            elif sort == "lesson":
                text = pages.lesson(world, rng, banned)
            else:
                text = pages.story(world, rng)
            section = {"article": "encyclopedia", "lesson": "school", "story": "stories"}[sort]
            if rng.random() < 0.15:
                section = "forum"
            if kind == "pii":
                items = pages.pii_items(world, rng)
                text = f"{text}\n\n{pages.pii_paragraph(items, rng)}"
                label["pii"] = items
            elif rng.random() < 0.04:
                fixed = f"{text}\n\n{rng.choice(_MOJIBAKE_SENTENCES)}"
                text = _garble(fixed)
                label.update(mojibake=True, repaired_text=fixed)
            if kind == "clean" and "mojibake" not in label:
                originals.append((label["id"], text, section))
        elif kind == "boilerplate":
            text = pages.boilerplate(world, rng)
        elif kind == "spam":
            text = pages.spam(world, rng)
        elif kind == "gibberish":
            text = pages.gibberish(rng)
        elif kind == "truncated":
            text = pages.truncated(pages.article(world, rng), rng)
        elif kind == "foreign":
            label["lang"], text = pages.foreign(world, rng)
        elif kind == "duplicate_exact":
            src_id, text, section = rng.choice(originals)
            label["duplicate_of"] = src_id
        elif kind == "duplicate_near":
            src_id, src_text, _ = rng.choice(originals)
            text = pages.near_duplicate(src_text, rng, _SECTIONS[section])
            label["duplicate_of"] = src_id
        else:  # leak
            if rng.random() < 0.25:
                v = rng.choice(val)
                text = f"Found this text online, sharing it here.\n\n{v['text']}"
                label["leaks"] = [v["id"]]
            else:
                chosen = rng.sample(leak_items, k=rng.randint(1, 3))
                text = pages.leak_page(world, rng, [(q, a) for q, a, _ in chosen])
                label["leaks"] = [x[2] for x in chosen]
        slug = "".join(c for c in text[:40].lower() if c.isalnum() or c == " ").strip().replace(" ", "-")
        docs.append({"id": label["id"], "text": text, "source": f"tinyweb/{section}",
                     "url": f"https://{_SECTIONS[section]}/{i}/{slug or 'page'}"})
        labels.append(label)

    for f in range(0, n_docs, DOCS_PER_FILE):
        write_jsonl(docs[f:f + DOCS_PER_FILE], out / "corpus" / f"crawl-{f // DOCS_PER_FILE:05d}.jsonl")
    write_jsonl(labels, out / "labels.jsonl")
    ref_rng = random.Random(f"tinyweb-reference-{seed}")
    ref = []
    for i in range(1500):
        maker = (lambda: pages.article(world, ref_rng), lambda: pages.lesson(world, ref_rng, banned),
                 lambda: pages.story(world, ref_rng))[i % 3]
        ref.append({"id": f"ref-{i:05d}", "text": maker(), "source": "tinyweb/reference"})
    write_jsonl(ref, out / "reference" / "reference.jsonl")
    write_jsonl(val, out / "evals" / "validation.jsonl")
    write_jsonl(qa, out / "evals" / "world_qa.jsonl")
    write_jsonl(arith, out / "evals" / "arithmetic.jsonl")
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab["kind"]] = counts.get(lab["kind"], 0) + 1
    meta = {"format": FORMAT_VERSION, "generator": "hytron.data.tinyweb", "seed": seed, "n_docs": n_docs,
            "junk_share": round(sum(shares[k] for k in JUNK_KINDS), 4),
            "counts": dict(sorted(counts.items())),
            "paths": {"corpus": "corpus", "labels": "labels.jsonl", "reference": "reference/reference.jsonl",
                      "validation": "evals/validation.jsonl", "world_qa": "evals/world_qa.jsonl",
                      "arithmetic": "evals/arithmetic.jsonl"}}
    (out / "tinyweb.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def read_labels(tinyweb_dir: str | Path) -> dict[str, dict]:
    """Ground-truth labels by document id."""
    with (Path(tinyweb_dir) / "labels.jsonl").open(encoding="utf-8") as f:
        return {r["id"]: r for r in map(json.loads, f)}


def is_tinyweb(path: str | Path) -> bool:
    return (Path(path) / "tinyweb.json").is_file()


# the curation steps whose job it is to remove each junk kind (hytron.data.steps.STEPS)
OWNING_STEPS = {"boilerplate": {"heuristics"}, "spam": {"heuristics"}, "truncated": {"heuristics", "language"},
                "gibberish": {"language", "heuristics"}, "foreign": {"language"},
                "duplicate_exact": {"exact_dedup"}, "duplicate_near": {"fuzzy_dedup"},
                "leak": {"decontamination"}}


def evaluate(tinyweb_dir: str | Path, curated_dir: str | Path) -> dict:
    """Score a curation of this crawl against the truth: per junk kind, recall (share removed by any step) and
    precision (of the docs removed by the kind's owning steps, the share that are this kind rather than
    good text); good docs kept; planted PII values gone from kept text."""
    from hytron.data.writers import iter_records

    labels = read_labels(tinyweb_dir)
    removed = {r["id"]: r["step"] for r in iter_records(curated_dir, "removed")}
    kept = {r["id"]: r["text"] for r in iter_records(curated_dir, "kept")}
    out: dict = {"kinds": {}}
    for kind in JUNK_KINDS:
        ids = [i for i, lab in labels.items() if lab["kind"] == kind]
        by_owner = [i for i, step in removed.items() if step in OWNING_STEPS[kind] and i in labels]
        true = sum(labels[i]["kind"] == kind for i in by_owner)
        false = sum(labels[i]["kind"] in GOOD_KINDS for i in by_owner)
        out["kinds"][kind] = {"docs": len(ids), "recall": sum(i in removed for i in ids) / max(len(ids), 1),
                              "precision": true / max(true + false, 1)}
    good = [i for i, lab in labels.items() if lab["kind"] in GOOD_KINDS]
    out["good_kept"] = sum(i in kept for i in good) / max(len(good), 1)
    planted = [(i, p["value"]) for i, lab in labels.items() if i in kept for p in lab.get("pii", [])]
    out["pii_redacted"] = sum(v not in kept[i] for i, v in planted) / max(len(planted), 1)
    return out
