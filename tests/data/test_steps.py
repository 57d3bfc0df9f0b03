"""Each step on handcrafted text: the reason it gives, the score it reports, the text it leaves."""

from __future__ import annotations

import numpy as np
import pytest

from hytron.config import ConfigError
from hytron.data import dedup, filters, pii, quality
from hytron.data.curate_config import HeuristicConfig, LanguageConfig, load_curate_config
from hytron.data.decontam import EvalIndex

PROSE = ("The harbour town grew slowly over three centuries. Fishermen built the first houses near the water, "
         "and merchants came later with salt and cloth. The old church was finished in the year that the "
         "bridge fell. Children still learn the names of the ships that were lost in the great storm. "
         "Today the market is busy on Saturdays, and visitors walk along the wall to see the lighthouse.")


@pytest.mark.parametrize("text,reason", [
    ("Too short to be a page.", "gopher_short_doc"),
    (" ".join(["supercalifragilisticexpialidocious"] * 60), "gopher_mean_word_length"),
    (PROSE + " #tag" * 40, "gopher_symbol_ratio"),
    ("\n".join(f"- item {i} of the list of things to buy with the money" for i in range(60)), "gopher_bullet_lines"),
    (" ".join(["cheap clocks buy online best price"] * 15), "gopher_stop_words"),
    ("\n\n".join([PROSE] * 3), "gopher_dup_paragraphs"),
    (PROSE + " Lorem ipsum dolor sit amet.", "c4_lorem_ipsum"),
    (PROSE + " function() { return 1; }", "c4_curly_bracket"),
    ("\n".join(s.strip() for s in PROSE.split(".")), "c4_few_sentences"),  # no line ends a sentence
])
def test_heuristics_name_the_rule(text, reason):
    keep, got, score = filters.heuristic_verdict(text, HeuristicConfig())
    assert (keep, got) == (False, reason)


def test_heuristics_keep_prose_and_thresholds_are_configurable():
    assert filters.heuristic_verdict(PROSE, HeuristicConfig()) == (True, None, None)
    short = PROSE.split(". ")[0] + ". " + PROSE.split(". ")[1] + "."
    assert filters.heuristic_verdict(short, HeuristicConfig())[1] == "gopher_short_doc"
    relaxed = HeuristicConfig(min_doc_words=5, c4_min_sentences=1)
    assert filters.heuristic_verdict(short, relaxed)[0]


def test_language_identification():
    cfg = LanguageConfig()
    assert filters.identify_language(PROSE, cfg)[0][0]
    fr = "La ville est connue pour son marché et ses vieilles rues. Le fleuve traverse le centre historique."
    (keep, reason, conf), code, _ = filters.identify_language(fr, cfg)
    assert (keep, reason, code) == (False, "language_fr", "fr") and conf > 50
    assert filters.identify_language("xqzt vlkp qwrtz mnbvc zzkp", cfg)[0][1] == "language_unknown"
    assert filters.identify_language(fr, LanguageConfig(keep=["en", "fr"]))[0][0]


def test_unicode_repair_fixes_mojibake_only():
    good = "Crème brûlée at the café — it’s fine."
    assert filters.repair_unicode(good.encode().decode("cp1252")) == (good, True)
    assert filters.repair_unicode(good) == (good, False)
    assert filters.repair_unicode(PROSE) == (PROSE, False)


def test_pii_redaction():
    text = ("Mail jo.smith42@post.test or call (555) 013-2291 / +1 555 201 3344; server 192.168.14.7. "
            "In 1820 the town had 3.5 mills and version 1.2.3 of the map; 347 + 589 = 936.")
    out, counts = pii.redact(text)
    assert counts == {"email": 1, "phone": 2, "ip": 1}
    assert "<EMAIL>" in out and "192.168" not in out and "555" not in out
    assert "1820" in out and "1.2.3" in out and "347 + 589 = 936" in out
    assert pii.redact(PROSE) == (PROSE, {})


def test_decontamination_short_items_whole_long_items_by_overlap():
    passage = PROSE
    idx = EvalIndex([("q1", "What is the capital of Veloria?"), ("a1", "What is 347 + 589?"), ("v1", passage)],
                    n=13, min_overlap=0.8)
    assert idx.check("Quiz: what is the capital of Veloria? Answer: Marn.")[0] == "q1"
    assert idx.check("What is 347 - 589? It is negative.") is None  # the operator is part of the item
    assert idx.check("Copied: " + passage)[0] == "v1"
    half = " ".join(passage.split()[:40])
    assert idx.check(half) is None  # a partial overlap below min_overlap is not a leak
    assert idx.check("The capital of Veloria is Marn.") is None


def test_minhash_estimates_jaccard_and_exact_key_normalises():
    a = dedup.shingle_hashes(PROSE, 5)
    edited = PROSE.replace("Saturdays", "Sundays").replace("great", "terrible")
    b = dedup.shingle_hashes(edited, 5)
    mh = dedup.MinHasher(256, seed=1)
    est = float(np.mean(mh.signature(a) == mh.signature(b)))
    assert abs(est - dedup.jaccard(a, b)) < 0.1
    assert dedup.exact_key("Hello   World\n") == dedup.exact_key("hello world")


def test_fuzzy_dedup_keeps_earliest_and_verifies_jaccard():
    other = ("A completely different text about mountains, snow, goats and the long climb to the summit "
             "that shepherds make every summer with their dogs and their heavy packs of cheese.")
    texts = [PROSE, other, PROSE.replace("Saturdays", "Sundays"), other + " Extra words at the end."]
    sh = [dedup.shingle_hashes(t, 5) for t in texts]
    mh = dedup.MinHasher(100, 1)
    sigs = np.stack([mh.signature(s) for s in sh])
    dups = dedup.fuzzy_duplicates(sigs, sh, 20, 5, 0.7)
    assert sorted((d.index, d.kept) for d in dups) == [(2, 0), (3, 1)]
    assert all(0.7 <= d.score <= 1 for d in dups)
    assert dedup.fuzzy_duplicates(sigs, sh, 20, 5, 0.99) == []  # candidates below threshold are not removed


def test_quality_buckets_follow_token_weighted_percentiles():
    scores = np.linspace(0, 1, 1000, dtype=np.float32)
    tokens = np.ones(1000)
    th = quality.percentile_thresholds(scores, tokens)
    buckets = quality.assign_buckets({"a": scores}, {"a": th})
    counts = np.bincount(buckets, minlength=5)
    # bins 0-6 (35%), 7-11 (25%), 12-17 (30%), 18 (5%), 19 (5%)
    assert np.allclose(counts / 1000, [0.35, 0.25, 0.30, 0.05, 0.05], atol=0.01)
    # max over classifiers: a document top-ranked by either lands in bucket 4
    b2 = quality.assign_buckets({"a": scores, "b": scores[::-1].copy()}, {"a": th, "b": th})
    assert b2[0] == 4 and b2[-1] == 4


def test_quality_classifiers_separate_reference_from_junk():
    good = [PROSE.replace("three", str(i)) for i in range(40)]
    junk = [" ".join(["cheap", "clocks", "buy", "online", str(i)] * 20) for i in range(40)]
    model = quality.QualityModel.train(good[:30], junk[:30], ["linear", "bayes"], seed=0)
    s = model.score(good[30:] + junk[30:])
    for name in ("linear", "bayes"):
        assert s[name][:10].min() > s[name][10:].max()


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("dedup: {threshold: 1.5}\n")
    with pytest.raises(ConfigError, match=r"dedup.threshold"):
        load_curate_config(bad)
    bad.write_text("heuristics: {min_doc_wordz: 5}\n")
    with pytest.raises(ConfigError, match=r"heuristics: unknown field\(s\) \['min_doc_wordz'\]"):
        load_curate_config(bad)
    bad.write_text("executor: {kind: slurm}\n")
    with pytest.raises(ConfigError, match=r"executor.kind"):
        load_curate_config(bad)
    with pytest.raises(ConfigError, match=r"profile: must be one of \['web', 'documents'\]"):
        load_curate_config(None, sets=["profile=books"])  # the names come from filters.PROFILES


def test_curate_recipes_load_and_the_default_recipe_is_the_default():
    from pathlib import Path

    from hytron.config import to_dict
    from hytron.data.curate_config import CurateConfig

    recipes = sorted((Path(__file__).resolve().parents[2] / "src" / "hytron" / "recipes").glob("curate*.yaml"))
    assert len(recipes) >= 2
    for path in recipes:
        load_curate_config(path)
    assert to_dict(load_curate_config(recipes[0])) == to_dict(CurateConfig())
