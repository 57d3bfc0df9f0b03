"""TinyWeb: fast, deterministic, labelled outside the text, held-out evals that are answerable yet unseen."""

from __future__ import annotations

import json
import random
from collections import Counter

from hytron.data import tinyweb
from hytron.data.world import World


def _lines(path):
    with path.open() as f:
        return [json.loads(x) for x in f]


def test_generates_20k_docs_with_the_documented_layout(tmp_path):
    meta = tinyweb.generate(tmp_path, 20_000, seed=0)  # its speed is bench material, not a test assertion
    for key, rel in meta["paths"].items():
        assert (tmp_path / rel).exists(), key
    docs = [d for f in sorted((tmp_path / "corpus").glob("*.jsonl")) for d in _lines(f)]
    assert len(docs) == 20_000 and set(docs[0]) == {"id", "text", "source", "url"}
    labels = _lines(tmp_path / "labels.jsonl")
    assert [lab["id"] for lab in labels] == [d["id"] for d in docs]
    counts = Counter(lab["kind"] for lab in labels)
    assert set(counts) == set(tinyweb.KINDS) and counts == meta["counts"]
    for kind, share in tinyweb.PROPORTIONS.items():
        assert abs(counts[kind] / 20_000 - share) < 0.01, kind


def test_same_seed_same_bytes_other_seed_other_text(tmp_path):
    tinyweb.generate(tmp_path / "a", 500, seed=7)
    tinyweb.generate(tmp_path / "b", 500, seed=7)
    tinyweb.generate(tmp_path / "c", 500, seed=8)
    for rel in ("corpus/crawl-00000.jsonl", "labels.jsonl", "evals/world_qa.jsonl", "reference/reference.jsonl"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    first = "corpus/crawl-00000.jsonl"
    assert (tmp_path / "a" / first).read_bytes() != (tmp_path / "c" / first).read_bytes()


def test_labels_never_inside_text_and_duplicates_point_back(tmp_path):
    tinyweb.generate(tmp_path, 3000, seed=1)
    docs = {d["id"]: d for d in _lines(tmp_path / "corpus/crawl-00000.jsonl")}
    for lab in _lines(tmp_path / "labels.jsonl"):
        text = docs[lab["id"]]["text"]
        assert lab["kind"] not in docs[lab["id"]]["source"]
        if lab["kind"] == "duplicate_exact":
            assert text == docs[lab["duplicate_of"]]["text"] and lab["duplicate_of"] < lab["id"]
        if lab["kind"] == "pii":
            assert all(item["value"] in text for item in lab["pii"])


def test_evals_are_held_out_but_answerable(tmp_path):
    tinyweb.generate(tmp_path, 6000, seed=2)
    labels = {lab["id"]: lab for lab in _lines(tmp_path / "labels.jsonl")}
    corpus = {d["id"]: d["text"] for f in (tmp_path / "corpus").glob("*.jsonl") for d in _lines(f)}
    clean_text = "\n".join(t for i, t in corpus.items() if labels[i]["kind"] != "leak")
    qa = _lines(tmp_path / "evals/world_qa.jsonl")
    arith = _lines(tmp_path / "evals/arithmetic.jsonl")
    val = _lines(tmp_path / "evals/validation.jsonl")
    assert len(qa) == 500 and len(arith) == 500 and len(val) == 300
    assert not any(q["question"] in clean_text for q in qa)
    assert not any(a["problem"] in clean_text for a in arith)
    assert not any(v["text"] in clean_text for v in val)
    assert all(a["answer"] == eval(f"{a['a']} {a['op']} {a['b']}") for a in arith)  # noqa: S307
    # the answer is stated in the corpus: an article about the subject contains it
    world = World.generate(2)
    answered = sum(1 for q in qa if q["answer"] in clean_text and world.entities[q["subject"]].name in clean_text)
    assert answered / len(qa) > 0.99


def test_world_is_importable_and_consistent():
    a, b = World.generate(5), World.generate(5)
    assert a.facts == b.facts and len(a.facts) > 5000
    city = a.by_kind["city"][0]
    text = a.article(city, random.Random(0))
    country = a.entities[city.attrs["country"]].name
    assert city.name in text and country in text and str(city.attrs["founded"]) in text
    fact = next(f for f in a.facts if f.relation == "capital")
    q, ans = a.question(fact)
    assert q == f"What is the capital of {a.entities[fact.subject].name}?" and ans == a.entities[fact.value].name
