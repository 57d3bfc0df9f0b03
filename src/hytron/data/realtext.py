"""RealText: a labelled test corpus of real technical prose from this Python install, with planted junk.

`build(out_dir, seed=0)` writes, all UTF-8:

    DIR/realtext.json        meta: seed, counts per kind, Python version, these paths
    DIR/corpus/docs.jsonl    the documents, shuffled: {"id", "text", "source"}
    DIR/labels.jsonl         ground truth, one line per doc: {"id", "kind", "origin"}; duplicates add
                             "duplicate_of" (the id of the good document they copy)

Good documents are text nobody wrote for hytron, as it ships: chunks of Python's reference documentation
(`pydoc_data.topics`: hard-wrapped lines, grammar and code examples), stdlib module docstrings (read with
`ast`, never imported: doctests, indented examples, parameter lists) and installed packages' descriptions
(`importlib.metadata`: Markdown/reST READMEs with badges, links, tables and code blocks). Good documents that
near-duplicate each other in the install are dropped before planting, so the truth is clean.
Kinds: GOOD_KINDS `reference` and `docstring` (hard-wrapped prose, PROSE_KINDS) and `readme`; JUNK_KINDS are
planted: gibberish, keyword spam, navigation boilerplate, encoding garbage (binary or mis-decoded bytes),
foreign-language text, exact copies (re-wrapped at another width) and near copies (a line added, words
changed) of good documents. `evaluate(dir, curated_dir)` scores a curation run against the labels.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import random
import string
import sys
import sysconfig
import textwrap
import zlib
from pathlib import Path

from hytron.data.document import words_lower
from hytron.data.pages import FOREIGN, keyword_line, random_words

PROSE_KINDS = ("reference", "docstring")
GOOD_KINDS = (*PROSE_KINDS, "readme")
JUNK_KINDS = ("gibberish", "spam", "boilerplate", "encoding_garbage", "foreign", "duplicate_exact",
              "duplicate_near")


def _chunks(text: str, max_words: int) -> list[str]:
    """Paragraph-aligned pieces of at most about `max_words` words."""
    out, cur, n = [], [], 0
    for para in text.split("\n\n"):
        w = len(para.split())
        if cur and n + w > max_words:
            out.append("\n\n".join(cur))
            cur, n = [], 0
        cur.append(para)
        n += w
    if cur and out and n < max_words // 4:  # a short tail joins the previous piece
        out[-1] += "\n\n" + "\n\n".join(cur)
    elif cur:
        out.append("\n\n".join(cur))
    return out


def reference_docs(max_words: int = 350) -> list[tuple[str, str]]:
    """(origin, text) chunks of the reference documentation that ships with Python (pydoc's topics)."""
    from pydoc_data.topics import topics

    return [(f"pydoc_data.topics:{name}#{i}", chunk) for name in sorted(topics)
            for i, chunk in enumerate(_chunks(topics[name].strip(), max_words))]


def docstring_docs(min_words: int = 40) -> list[tuple[str, str]]:
    """(origin, text) module docstrings of the top-level stdlib modules, parsed from source."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_bytes()), clean=True)
        except (SyntaxError, ValueError, OSError):
            continue
        if doc and len(doc.split()) >= min_words:
            out.append((f"stdlib:{path.name}", doc))
    return out


def readme_docs(min_words: int = 80, limit: int = 120) -> list[tuple[str, str]]:
    """(origin, text) long descriptions (README texts) of installed distributions, by name."""
    seen, out = set(), []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = (dist.metadata["Name"] or "").lower()
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if name in seen or len(text.split()) < min_words:
            continue
        seen.add(name)
        out.append((f"metadata:{name}", text.strip()))
    return out[:limit]


def _unique(docs: list[tuple[str, str, str]], max_overlap: float = 0.3) -> list[tuple[str, str, str]]:
    """Drop documents sharing more than `max_overlap` of their word 5-grams with an earlier one."""
    index: dict[tuple, int] = {}
    out = []
    for kind, origin, text in docs:
        w = words_lower(text)
        grams = {tuple(w[i:i + 5]) for i in range(len(w) - 4)}
        if not grams:
            continue
        hits: dict[int, int] = {}
        for g in grams:
            if g in index:
                hits[index[g]] = hits.get(index[g], 0) + 1
        if hits and max(hits.values()) > max_overlap * len(grams):
            continue
        for g in grams:
            index.setdefault(g, len(out))
        out.append((kind, origin, text))
    return out


def _rewrap(text: str, width: int) -> str:
    """The same words, each paragraph wrapped at `width` (a copy saved from another editor)."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), width) for p in text.split("\n\n") if p.strip())


_COMMERCE = ["cheap", "best", "buy", "online", "discount", "free", "download", "deal", "price", "sale", "top",
             "official", "crack", "license key", "2025", "coupon"]
_NAV = ["Home", "Docs", "Blog", "Pricing", "About", "Contact", "Careers", "Login", "Sign up", "Download",
        "Community", "Support", "Status", "Press", "Sitemap", "Search"]


def _gibberish(rng: random.Random) -> str:
    style = rng.choice(["letters", "hex", "symbols", "keyboard"])
    if style == "letters":
        words = random_words(string.ascii_lowercase, rng, (2, 12), (80, 250))
    elif style == "hex":
        words = random_words("0123456789abcdefABCDEF", rng, (8, 40), (50, 150))
    elif style == "symbols":
        words = random_words("#$%&*@~^=<>{}[]|/\\+_;:" + string.ascii_letters, rng, (2, 10), (50, 150))
    else:
        rows = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
        words = ["".join(rng.choice(rng.choice(rows)) for _ in range(rng.randint(3, 9))) for _ in range(120)]
    return textwrap.fill(" ".join(words), rng.choice([72, 79, 100, 10_000]))


def _spam(names: list[str], rng: random.Random) -> str:
    kw = rng.sample(names, 3) + rng.sample(_COMMERCE, 6)
    lines = [keyword_line(kw, rng, 14) for _ in range(rng.randint(8, 20))]
    text = "\n".join(lines)
    return textwrap.fill(text.replace("\n", " "), 76) if rng.random() < 0.4 else text


def _boilerplate(names: list[str], rng: random.Random) -> str:
    site = rng.choice(names)
    nav = rng.sample(_NAV, 9)
    related = [f"{rng.choice(['Getting started with', 'What is new in', 'Top 10 tips for', 'Release notes:'])} "
               f"{rng.choice(names)}" for _ in range(rng.randint(5, 10))]
    lines = [f"{site} | " + " | ".join(nav[:4]), *nav[4:], "Related articles", *related,
             rng.choice(["This site uses cookies. Accept all cookies", "We use cookies to improve your experience.",
                         "Cookie settings | Accept | Reject"]),
             "Follow us on GitHub", "Share on Twitter", f"Copyright {rng.randint(2005, 2025)} the {site} project.",
             "All rights reserved.", "Privacy policy | Terms of service | Imprint", "Back to top"]
    return "\n".join(lines)


def _encoding_garbage(text: str, rng: random.Random) -> str:
    style = rng.choice(["binary", "utf16", "ebcdic"])
    if style == "binary":  # a compressed file read as text
        data = zlib.compress(text.encode() * 3)
        return data.decode("latin-1")
    if style == "utf16":  # UTF-16 bytes read as Latin-1: every other character a NUL
        return text.encode("utf-16-le").decode("latin-1")
    return text.encode("cp500", "replace").decode("latin-1")  # EBCDIC bytes read as Latin-1


def _foreign(rng: random.Random) -> tuple[str, str]:
    lang = rng.choice(sorted(FOREIGN))
    sents = [s.format(city="Lindenfeld", country="Norland") for s in FOREIGN[lang]]
    paras = [" ".join(rng.sample(sents, k=rng.randint(4, len(sents)))) for _ in range(rng.randint(2, 4))]
    return lang, "\n\n".join(textwrap.fill(p, 72) for p in paras)


def _near_copy(text: str, rng: random.Random) -> str:
    paras = text.split("\n\n")
    words = paras[-1].split()
    for _ in range(max(1, len(" ".join(paras).split()) // 150)):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["also", "now", "here", "then", "often"])
    paras[-1] = textwrap.fill(" ".join(words), 72)
    return "\n\n".join([rng.choice(["Draft, do not circulate.", "Copied from the team wiki.", "Note: see below."]),
                        *paras])


def build(out_dir: str | Path, seed: int = 0, per_junk_kind: int = 40, max_per_good_kind: int = 200) -> dict:
    """Write the corpus and its labels into `out_dir`; returns the meta (counts per kind)."""
    rng = random.Random(seed)
    good = []
    for kind, docs in (("reference", reference_docs()), ("docstring", docstring_docs()), ("readme", readme_docs())):
        picked = sorted(rng.sample(range(len(docs)), min(len(docs), max_per_good_kind)))
        good += [(kind, docs[i][0], docs[i][1]) for i in picked]
    good = _unique(good)
    rows = [{"kind": k, "origin": o, "text": t} for k, o, t in good]
    names = sorted({o.split(":", 1)[1].split(".")[0].split("#")[0] for _, o, _ in good})
    sources = [r for r in rows if r["kind"] in PROSE_KINDS]
    for _ in range(per_junk_kind):
        rows.append({"kind": "gibberish", "origin": "planted", "text": _gibberish(rng)})
        rows.append({"kind": "spam", "origin": "planted", "text": _spam(names, rng)})
        rows.append({"kind": "boilerplate", "origin": "planted", "text": _boilerplate(names, rng)})
        rows.append({"kind": "encoding_garbage", "origin": "planted",
                     "text": _encoding_garbage(rng.choice(sources)["text"], rng)})
        lang, text = _foreign(rng)
        rows.append({"kind": "foreign", "origin": f"planted:{lang}", "text": text})
    originals = rng.sample(range(len(rows[:len(good)])), 2 * per_junk_kind)
    for j, o in enumerate(originals):
        src = rows[o]
        kind = "duplicate_exact" if j % 2 == 0 else "duplicate_near"
        text = _rewrap(src["text"], rng.choice([60, 66, 88])) if kind == "duplicate_exact" else \
            _near_copy(src["text"], rng)
        if kind == "duplicate_exact" and src["kind"] == "readme":
            text = src["text"]  # re-wrapping would reflow code blocks: a byte copy
        rows.append({"kind": kind, "origin": src["origin"], "text": text, "duplicate_of": o})
    order = [i for i, r in enumerate(rows) if "duplicate_of" not in r]
    rng.shuffle(order)
    for i, r in enumerate(rows):  # each copy somewhere after its original, so input order keeps the original
        if "duplicate_of" in r:
            order.insert(rng.randint(order.index(r["duplicate_of"]) + 1, len(order)), i)
    ids = {pos: f"rt-{rank:05d}" for rank, pos in enumerate(order)}
    out = Path(out_dir)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with (out / "corpus" / "docs.jsonl").open("w", encoding="utf-8") as docs, \
            (out / "labels.jsonl").open("w", encoding="utf-8") as labels:
        for pos in sorted(order, key=ids.get):
            r = rows[pos]
            docs.write(json.dumps({"id": ids[pos], "text": r["text"], "source": r["kind"] if r["kind"] in GOOD_KINDS
                                   else "planted"}, ensure_ascii=False) + "\n")
            lab = {"id": ids[pos], "kind": r["kind"], "origin": r["origin"]}
            if "duplicate_of" in r:
                lab["duplicate_of"] = ids[r["duplicate_of"]]
            labels.write(json.dumps(lab) + "\n")
            counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    meta = {"format": 1, "seed": seed, "python": sys.version.split()[0], "n_docs": len(rows), "counts": counts,
            "paths": {"corpus": "corpus", "labels": "labels.jsonl"}}
    (out / "realtext.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def read_labels(realtext_dir: str | Path) -> dict[str, dict]:
    with (Path(realtext_dir) / "labels.jsonl").open(encoding="utf-8") as f:
        return {lab["id"]: lab for lab in map(json.loads, f)}


def evaluate(realtext_dir: str | Path, curated_dir: str | Path) -> dict:
    """Per junk kind recall, good documents kept (all, prose only, per kind), and duplicate pairs where
    both copies were removed (should be none) or both kept."""
    from hytron.data.writers import iter_records

    labels = read_labels(realtext_dir)
    kept = {r["id"] for r in iter_records(curated_dir, "kept")}

    def share(ids):
        return sum(i in kept for i in ids) / max(len(ids), 1)

    of = {k: [i for i, lab in labels.items() if lab["kind"] == k] for k in GOOD_KINDS + JUNK_KINDS}
    dups = [(i, labels[i]["duplicate_of"]) for k in ("duplicate_exact", "duplicate_near") for i in of[k]]
    return {"junk_recall": {k: round(1 - share(of[k]), 4) for k in JUNK_KINDS},
            "good_kept": round(share([i for k in GOOD_KINDS for i in of[k]]), 4),
            "prose_kept": round(share([i for k in PROSE_KINDS for i in of[k]]), 4),
            "good_kept_by_kind": {k: round(share(of[k]), 4) for k in GOOD_KINDS},
            "duplicate_pairs": len(dups),
            "pairs_both_removed": sum(a not in kept and b not in kept for a, b in dups),
            "pairs_both_kept": sum(a in kept and b in kept for a, b in dups)}
