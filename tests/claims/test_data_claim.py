"""The data claim: tokens-to-target on log tokens, the validity gates and the verdict on constructed records, and
`hytron reproduce data --quick --seeds 2` end to end (per-seed values, log intervals, gates, rule, data hashes
that differ by seed, QA held out from every arm's training text, checked here from the files left behind)."""

import json
import math
import re

import pytest

from hytron.claims import data as claim
from hytron.claims import stats

pytest.importorskip("matplotlib", reason="claim plots need matplotlib (pip install 'hytron[eval]')")
TOKENS = [1000.0, 2000.0, 4000.0, 8000.0]


def test_tokens_to_target_interpolates_on_log_tokens_after_the_last_crossing():
    t, status = claim.tokens_to_target(TOKENS, [0.2, 0.4, 0.6, 0.8], 0.5)
    assert status == "reached" and t == pytest.approx(math.sqrt(2000 * 4000))  # halfway in log tokens
    # a noisy early point above the target does not count: the crossing after which it stays above does
    t, status = claim.tokens_to_target(TOKENS, [0.6, 0.3, 0.4, 0.8], 0.5)
    assert status == "reached" and t == pytest.approx(4000 * 2 ** 0.25)
    assert claim.tokens_to_target(TOKENS, [0.6, 0.7, 0.8, 0.9], 0.5) == (1000.0, "at_smallest")
    assert claim.tokens_to_target(TOKENS, [0.1, 0.2, 0.3, 0.4], 0.5) == (None, "not_reached")


def test_speedup_is_censored_at_the_budget_range():
    raw = [0.25, 0.3, 0.35, 0.4]
    assert claim.speedup(TOKENS, [0.3, 0.4, 0.6, 0.7], raw) == (pytest.approx(4.0), "reached")
    assert claim.speedup(TOKENS, [0.5, 0.6, 0.7, 0.8], raw) == (8.0, "at_smallest")  # at least 8x
    assert claim.speedup(TOKENS, [0.2, 0.2, 0.3, 0.35], raw) == (1.0, "not_reached")  # at most 1x
    assert claim.speedup(TOKENS, raw, raw)[0] == pytest.approx(1.0)


def _record(seed, raw, labels, pipeline, random=None):
    res = {a: {"tokens": TOKENS, "qa_acc": acc, "qa_rumour": [0.1] * 4, "final_loss": [1.0] * 4}
           for a, acc in (("raw", raw), ("labels", labels), ("pipeline", pipeline), ("random", random or raw))}
    kinds = {k: 0.5 for k in claim.KINDS}
    return {"seed": seed, "data_hash": {"raw": f"h{seed}"}, "arm_tokens": {"raw": 500, "labels": 100},
            "useful_token_share": 0.2, "results": res, "qa_overlap_after": {a: 0 for a in claim.ARMS},
            "pipeline_removed_share": kinds, "pipeline_kept_mean_bucket": kinds}


def test_gates_and_verdict_on_constructed_records(tmp_path):
    raw = [0.25, 0.28, 0.30, 0.32]
    fast = [0.5, 0.6, 0.7, 0.8]  # at the target from the smallest budget: >= 8x
    slowish = [0.25, 0.31, 0.34, 0.5]  # crosses 0.32 a third of the way (in log tokens) from 2k to 4k: 3.17x
    s = claim.QUICK
    met = claim.summarize(tmp_path / "met", s, {0: _record(0, raw, fast, fast), 1: _record(1, raw, fast, fast)}, 0.0,
                          log=lambda m: None)
    assert [g["passed"] for g in met["gates"]] == [True, True] and met["verdict"] == "met"
    assert met["rule"] == claim.RULE and met["headline"]["criteria"][0]["per_seed"] == [8.0, 8.0]
    assert met["data_hashes"] == {"seed 0": {"raw": "h0"}, "seed 1": {"raw": "h1"}}
    not_met = claim.summarize(tmp_path / "nm", s, {0: _record(0, raw, fast, slowish),
                                                   1: _record(1, raw, fast, slowish)}, 0.0,
                              log=lambda m: None)
    c = not_met["headline"]["criteria"][0]
    assert not_met["verdict"] == "not met" and c["mean"] == pytest.approx(8000 / (2000 * 2 ** (1 / 3)))
    # the label arm below 60%: whatever the speed-up, the experiment is not valid
    weak = [0.3, 0.4, 0.5, 0.55]
    invalid = claim.summarize(tmp_path / "nv", s, {0: _record(0, raw, weak, fast), 1: _record(1, raw, weak, fast)},
                              0.0, log=lambda m: None)
    assert invalid["gates"][0]["passed"] is False and invalid["verdict"] == "not valid"
    # a label-raw gap whose interval reaches 0 fails the second gate
    noisy = claim.summarize(tmp_path / "gap", s, {0: _record(0, [0.25, 0.3, 0.4, 0.9], fast, fast),
                                                  1: _record(1, [0.25, 0.3, 0.4, 0.6], fast, fast)}, 0.0,
                            log=lambda m: None)
    assert noisy["gates"][1]["passed"] is False and noisy["verdict"] == "not valid"
    beside = met["headline"]["beside"]
    assert beside["inverse_useful_token_share"]["mean"] == pytest.approx(5.0)
    assert beside["pipeline_over_labels"]["mean"] == pytest.approx(1.0)


def test_settings_are_validated_before_anything_runs(tmp_path):
    from hytron.claims import run_claim
    from hytron.config import ConfigError

    with pytest.raises(ValueError, match="unknown setting"):
        run_claim("data", tmp_path, quick=True, overrides=["junk_shares=[0.5]"])
    with pytest.raises((ConfigError, ValueError), match="budgets"):
        run_claim("data", tmp_path, quick=True, overrides=["budgets=[4096, 1024]"])
    with pytest.raises((ConfigError, ValueError), match="profile"):
        run_claim("data", tmp_path, quick=True, overrides=["profile=books"])
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_reproduce_data_quick(tmp_path, capsys):
    from hytron.cli import main

    out = tmp_path / "data"
    assert main(["reproduce", "data", "--out", str(out), "--quick", "--seeds", "2"]) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["claim"] == "data" and r["seeds"] == [0, 1] and r["rule"] == claim.RULE
    assert r["verdict"] == stats.claim_verdict(r["headline"]["criteria"], r["gates"])
    assert [g["name"] for g in r["gates"]] == ["label-curated QA at the largest budget",
                                                "label-curated minus raw QA at the largest budget"]
    c = r["headline"]["criteria"][0]
    assert len(c["per_seed"]) == 2 and all(v > 0 for v in c["per_seed"]) and c["method"].startswith("geometric")
    lo, hi = c["ci95"]
    assert lo <= c["mean"] <= hi and c["mean"] == pytest.approx(math.sqrt(c["per_seed"][0] * c["per_seed"][1]))
    assert r["headline"]["beside"]["labels_speedup"]["method"].startswith("geometric")
    # every seed its own world: every data hash differs between seeds
    h0, h1 = r["data_hashes"]["seed 0"], r["data_hashes"]["seed 1"]
    assert set(h0) == {*claim.ARMS, "qa"} and all(h0[k] != h1[k] for k in h0)
    for sd in (0, 1):
        d = r["details"][f"seed {sd}"]
        for a in claim.ARMS:  # one full-schedule run per budget, QA at the end of each
            res = d["results"][a]
            assert res["tokens"] == sorted(res["tokens"]) and len(res["tokens"]) == len(claim.QUICK.budgets)
            assert all(0 <= v <= 1 for v in res["qa_acc"])
            assert json.loads((out / f"seed{sd}" / "runs" / f"{a}-{claim.QUICK.budgets[0]}" / "config.json")
                              .read_text())["steps"] == res["tokens"][0] // (claim.QUICK.run.data.batch_size
                                                                             * claim.QUICK.run.data.seq_len)
        assert r["disjointness"][f"seed {sd}/qa"] == {a: 0 for a in claim.ARMS}
        # held out, checked from the files: no QA prompt + answer 7-gram in any arm's training text
        qa = [json.loads(x) for x in (out / f"seed{sd}" / "factworld" / "evals" / "qa.jsonl").read_text().splitlines()]
        for a in claim.ARMS:
            texts = [json.loads(x)["text"] for x in
                     (out / f"seed{sd}" / "arms" / a / "docs.jsonl").read_text().splitlines()]
            words = " ".join(" ".join(re.findall(r"\w+", t.lower())) for t in texts)
            assert "fact" not in words.split()
            kept, _ = stats.decontaminate(qa, lambda q: q["question"] + " " + q["answer"], texts, 7)
            assert len(kept) >= 0.9 * len(qa)
        labels = {json.loads(x)["id"]: json.loads(x)["kind"] for x in
                  (out / f"seed{sd}" / "factworld" / "labels.jsonl").read_text().splitlines()}
        label_arm = [json.loads(x)["id"] for x in (out / f"seed{sd}" / "arms" / "labels" / "docs.jsonl")
                     .read_text().splitlines()]
        assert label_arm and all(labels[i] == "clean" for i in label_arm)
        assert d["pipeline_removed_share"]["gibberish"] == 1.0  # what the pipeline can catch, it catches
    for name in r["plots"]:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
