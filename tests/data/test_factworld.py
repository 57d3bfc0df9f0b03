"""FactWorld's guarantees: every fact stated N times in >= 5 phrasings by clean pages, wrong-fact pages that really
contradict the world, labels for every document, the pre-registered composition, duplication concentrated on a
few junk pages, a QA frame no page uses, and a different world per seed."""

import json
import re
from collections import Counter

import pytest

from hytron.data import factworld as fw
from hytron.data.factworld import COMPOSITION, FILLERS, RELATIONS, FactWorld, FactWorldConfig, generate, read_labels
from hytron.data.io import read_jsonl


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("factworld")
    meta = generate(out, FactWorldConfig(entities=12, statements_per_fact=30), seed=3)
    return out, meta


def _crawl(out):
    return read_jsonl(out / "corpus" / "crawl.jsonl"), read_labels(out)


def _sentences(text):
    return [s for s in re.split(r"(?<=\.)\s+", text) if s]


def test_every_fact_is_stated_n_times_in_at_least_five_phrasings_by_clean_pages(world_dir):
    out, _ = world_dir
    rows, labels = _crawl(out)
    world = FactWorld.generate(3, 12)
    clean = [r["text"] for r in rows if labels[r["id"]]["kind"] == "clean"]
    sentences = Counter(s for t in clean for s in _sentences(t))
    for f in world.facts:
        phrasings = RELATIONS[f.relation][1]
        counts = [sentences[FactWorld.statement(f, p)] for p in range(len(phrasings))]
        assert sum(counts) == 30, (f, counts)
        assert sum(c > 0 for c in counts) >= 5, (f, counts)
        # the clean pages never state another value for the fact
        for p in range(len(phrasings)):
            for v in RELATIONS[f.relation][0]:
                if v != f.value:
                    assert sentences[FactWorld.statement(f, p, v)] == 0, (f, v)
    # labels agree with the text
    stated = Counter(tuple(s) for r in rows if labels[r["id"]]["kind"] == "clean"
                     for s in labels[r["id"]]["statements"])
    assert all(stated[(f.entity, f.relation, f.value)] == 30 for f in world.facts)


def test_wrong_fact_pages_contradict_the_world_and_agree_with_each_other(world_dir):
    out, _ = world_dir
    rows, labels = _crawl(out)
    world = FactWorld.generate(3, 12)
    truth = {(f.entity, f.relation): f for f in world.facts}
    wrong = [(r, labels[r["id"]]) for r in rows if labels[r["id"]]["kind"] == "wrong_fact"]
    assert len(wrong) > 20
    for r, lab in wrong:
        assert lab["statements"]
        for entity, relation, value in lab["statements"]:
            f = truth[(entity, relation)]
            assert value != f.value and value == f.rumour  # one rumour per fact: the pages agree
            assert any(FactWorld.statement(f, p, value) in r["text"] for p in range(len(RELATIONS[relation][1])))
        for f in world.facts:  # and no true statement sits on a wrong-fact page
            assert not any(FactWorld.statement(f, p) in r["text"] for p in range(len(RELATIONS[f.relation][1])))


def test_labels_composition_and_concentrated_duplication(world_dir):
    out, meta = world_dir
    rows, labels = _crawl(out)
    assert len(rows) == len(labels) == meta["docs"] and {lab["kind"] for lab in labels.values()} == set(fw.KINDS)
    shares = {k: v["tokens"] / meta["tokens"] for k, v in meta["by_kind"].items()}
    for k, want in COMPOSITION.items():
        assert shares[k] == pytest.approx(want, abs=0.03), (k, shares)
    assert meta["useful_token_share"] == pytest.approx(COMPOSITION["clean"], abs=0.02)
    text = {r["id"]: r["text"] for r in rows}
    position = {r["id"]: i for i, r in enumerate(rows)}
    dups = [lab for lab in labels.values() if lab["kind"] == "duplicate"]
    originals = Counter(lab["duplicate_of"] for lab in dups)
    assert 1 <= len(originals) <= 10 and max(originals.values()) >= 10  # a few pages, many copies each
    for lab in dups:
        orig = lab["duplicate_of"]
        assert text[lab["id"]] == text[orig] and position[orig] < position[lab["id"]]  # the first copy is labelled
        assert labels[orig]["kind"] in ("wrong_fact", "spam", "boilerplate")  # never a clean page
    clean_texts = [r["text"] for r in rows if labels[r["id"]]["kind"] == "clean"]
    assert len(set(clean_texts)) == len(clean_texts)
    assert not set(clean_texts) & {text[lab["id"]] for lab in labels.values() if lab["kind"] != "clean"}
    assert {lab["lang"] for lab in labels.values() if lab["kind"] == "foreign"} <= set(fw.pages.FOREIGN)


def test_qa_frame_is_in_no_page_and_items_are_well_formed(world_dir):
    out, _ = world_dir
    rows, _ = _crawl(out)
    qa = read_jsonl(out / "evals" / "qa.jsonl")
    world = FactWorld.generate(3, 12)
    assert len(qa) == len(world.facts) == 36
    for q, f in zip(qa, world.facts):
        assert q["choices"][q["label"]] == f.value == q["answer"] and f.rumour in q["choices"]
        assert len(set(q["choices"])) == 4 and set(q["choices"]) <= set(RELATIONS[f.relation][0])
        assert q["question"].startswith("Fact: ") and q["question"].rstrip(" the").endswith(":")
    words = {w for r in rows for w in re.findall(r"\w+", r["text"].lower())}
    assert "fact" not in words
    assert not any(re.search(r"\w: ", r["text"]) and f"{e}:" in r["text"] for r in rows for e in world.entities)
    values = {v for vals, _, _ in RELATIONS.values() for v in vals}
    assert not any(set(re.findall(r"\w+", s.lower())) & values for s in FILLERS)  # fillers state nothing


def test_seeds_regenerate_the_world_and_the_same_seed_repeats_it(tmp_path):
    cfg = FactWorldConfig(entities=6, statements_per_fact=6)
    metas = [generate(tmp_path / name, cfg, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    texts = {name: (tmp_path / name / "corpus" / "crawl.jsonl").read_text() for name in "abc"}
    assert texts["a"] == texts["b"] and texts["a"] != texts["c"]
    assert FactWorld.generate(0, 6).facts != FactWorld.generate(1, 6).facts
    assert json.loads((tmp_path / "a" / "factworld.json").read_text())["seed"] == 0 and metas[2]["seed"] == 1


@pytest.mark.parametrize("kwargs, match", [({"entities": 2}, "entities"), ({"statements_per_fact": 0}, "statements"),
                                           ({"composition": {"clean": 0.5, "junk": 0.5}}, "composition"),
                                           ({"composition": {"clean": 0.5, "spam": 0.4}}, "sum to 1")])
def test_bad_config_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FactWorldConfig(**kwargs)
