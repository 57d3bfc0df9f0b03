"""`hytron reproduce CLAIM --quick --seeds 2` on a CPU: every result.json field, verdicts read off the interval,
and every evaluation set disjoint by content from what the models trained on (checked here from the files
the run left behind, not from the claim's own counts)."""

import json
import math
import re
from pathlib import Path

import pytest

from hytron.claims import stats
from hytron.cli import main

pytest.importorskip("matplotlib", reason="claim plots need matplotlib (pip install 'hytron[eval]')")
PNG = b"\x89PNG\r\n\x1a\n"
FIELDS = {"claim", "verdict", "rule", "gates", "headline", "settings", "seeds", "data_hashes", "disjointness",
          "tried_settings", "environment", "plots", "seconds", "details"}
ESTIMATE = {"per_seed", "n", "mean", "sd", "ci95", "threshold", "verdict"}


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _jsonl(paths) -> list[dict]:
    return [json.loads(line) for p in paths for line in Path(p).read_text(encoding="utf-8").splitlines() if line]


def _reproduce(claim, out, capsys):
    assert main(["reproduce", claim, "--out", str(out), "--quick", "--seeds", "2"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert f'"verdict": "{result["verdict"]}"' in printed
    assert set(result) >= FIELDS, FIELDS - set(result)
    assert result["claim"] == claim and result["seeds"] == [0, 1] and result["settings"]
    assert result["verdict"] in stats.VERDICTS and result["tried_settings"]
    criteria = result["headline"]["criteria"]
    assert criteria
    for c in criteria:  # every criterion: both seeds' values, the interval, and the verdict the interval gives
        assert set(c) >= ESTIMATE and len(c["per_seed"]) == 2
        if c["n"] == 2:
            lo, hi = c["ci95"]
            assert lo <= c["mean"] <= hi
        assert c.get("interval_verdict", c["verdict"]) == stats.verdict(c, c["threshold"], c["higher_is_better"])
    for g in result["gates"]:
        assert set(g) == {"name", "passed", "value", "rule"} and isinstance(g["passed"], bool)
    if not all(g["passed"] for g in result["gates"]):  # a failed gate: no criterion may read "met" either
        assert result["verdict"] == "not valid" and all(c["verdict"] == "not valid" for c in criteria)
    assert result["verdict"] == stats.claim_verdict(criteria, result["gates"])
    assert isinstance(result["rule"], str) and result["rule"]
    for name in result["plots"]:
        assert (out / name).read_bytes()[:8] == PNG, f"{name} is not a PNG"
    return result


def _contained(evals: list[str], training: list[str]) -> int:
    """Evaluation texts that occur inside any training text (case and spacing folded)."""
    joined = "\n".join(stats.normalise(t) for t in training)
    return sum(stats.normalise(e) in joined for e in evals)


# ---- statistics ------------------------------------------------------------------------------------------------
def test_estimate_is_the_t_interval_over_seeds():
    est = stats.estimate([1.0, 2.0, 3.0])
    assert est["mean"] == 2.0 and est["sd"] == pytest.approx(1.0)
    half = 4.303 / math.sqrt(3)  # t(0.975, 2)
    assert est["ci95"] == pytest.approx([2 - half, 2 + half])
    one = stats.estimate([5.0])
    assert one["mean"] == 5.0 and one["ci95"] is None
    assert stats.estimate([1.0, None, 3.0])["missing"] == 1


def test_verdict_comes_from_the_interval_not_the_mean():
    straddling = stats.estimate([4.0, 8.0, 9.0])  # mean 7 > 6, but the interval reaches below 6
    assert straddling["mean"] > 6 and straddling["ci95"][0] < 6
    assert stats.verdict(straddling, 6.0) == "inconclusive"
    assert stats.verdict(stats.estimate([7.0, 7.2, 7.1]), 6.0) == "met"
    assert stats.verdict(stats.estimate([2.0, 2.2, 2.1]), 6.0) == "not met"
    assert stats.verdict(stats.estimate([0.010, 0.011, 0.012]), 0.015, higher_is_better=False) == "met"
    assert stats.verdict(stats.estimate([7.0]), 6.0) == "inconclusive"  # one seed: no interval, no verdict
    c = [stats.criterion("a", stats.estimate([7.0, 7.1]), 6.0), stats.criterion("b", stats.estimate([1.0, 9.0]), 5.0)]
    assert stats.overall(c) == "inconclusive" and stats.overall(c[:1]) == "met"
    assert stats.difference([1.0, 1.1, 1.2], [0.0, 0.1, 0.1])["separable"]


def test_decontamination_drops_pasted_and_verbatim_items():
    page = "Found this online. " + " ".join(f"w{i}" for i in range(60))
    evals = [" ".join(f"w{i}" for i in range(10, 70)), "a completely different text " * 10]
    kept, removed = stats.decontaminate(evals, str, [page], ngram=50)
    assert removed == 1 and kept == evals[1:]
    assert stats.decontaminate(["What is 2 + 2?"], str, ["Q: what is 2  + 2? A: 4"], ngram=13)[1] == 1


# ---- the claims ----------------------------------------------------------------------------------------------------
def test_reproduce_hybrid_quick(tmp_path, capsys):
    r = _reproduce("hybrid", tmp_path / "hybrid", capsys)
    h = r["headline"]
    p = h["parameters"]
    assert abs(p["hybrid"] - p["attention"]) / p["hybrid"] < 0.01  # equal parameters
    assert h["layers"]["hybrid"] / h["attention_layers"]["hybrid"] >= 12  # Nemotron-like attention share
    assert "M" not in h["patterns"]["attention"] and "M" in h["patterns"]["hybrid"]
    # each model at its own largest batch under each memory budget: the hybrid's state is smaller
    assert set(h["batches"]) == {"1", "2"}
    for budget, b in h["batches"].items():
        assert b["hybrid"] > b["attention"] >= 1 and b["hybrid"] < r["settings"]["max_batch"]  # the budget binds
        w = r["details"]["workload"][budget]
        assert len(w["hybrid"]) == len(w["attention"]) == 2 and all(x["prefill_s"] > 0 for x in w["hybrid"])
        # the verdict is read off the decode ratio, on the log scale
        crit = next(c for c in h["criteria"] if c["name"].endswith(f"{budget} MiB budget"))
        ratios = [x["decode_tok_s"] / y["decode_tok_s"] for x, y in zip(w["hybrid"], w["attention"])]
        assert crit["mean"] == pytest.approx(math.exp(sum(map(math.log, ratios)) / 2))
    assert h["memory_ratio_at_longest_context"] > 3
    assert all(g["passed"] for g in r["gates"]) and "no batch held at max_batch" in [g["name"] for g in r["gates"]]
    # random-weight timing subjects: no training data, so nothing to be disjoint from
    assert r["disjointness"] == {} and r["data_hashes"] == {}


def test_reproduce_nvfp4_quick(tmp_path, capsys):
    out = tmp_path / "nvfp4"
    r = _reproduce("nvfp4", out, capsys)
    h = r["headline"]
    runs = r["details"]["runs"]
    steps = r["settings"]["run"]["steps"]
    for sd in ("0", "1"):
        base, nv = runs["bf16"][sd]["evals"], runs["nvfp4"][sd]["evals"]
        late = [(n["val_loss"] - b["val_loss"]) / b["val_loss"] for n, b in zip(nv, base) if b["step"] >= 0.8 * steps]
        assert late and h["gaps"]["nvfp4"]["per_seed"][int(sd)] == pytest.approx(sum(late) / len(late))
        # recipes of one seed saw identical batches from one init: first training losses agree to quantization noise
        assert runs["nvfp4"][sd]["first_loss"] == pytest.approx(runs["bf16"][sd]["first_loss"], rel=0.02)
        assert runs["fp32"][sd]["first_loss"] == pytest.approx(runs["bf16"][sd]["first_loss"], rel=0.01)
    assert runs["bf16"]["0"]["first_loss"] != runs["bf16"]["1"]["first_loss"]  # seeds differ
    # each seed generates its own world and crawl: the data hashes differ between seeds
    hashes = r["data_hashes"]
    assert hashes["seed 0"]["train_crawl"] != hashes["seed 1"]["train_crawl"]
    assert hashes["seed 0"]["validation"] != hashes["seed 1"]["validation"]
    assert [g["name"].split(":")[0] for g in r["gates"]] == ["null arm", "no run diverged"]
    for sd in (0, 1):
        val = _texts(out / f"seed{sd}" / "eval" / "validation.jsonl")
        crawl = [d["text"] for d in _jsonl(sorted((out / f"seed{sd}" / "tinyweb" / "corpus").glob("*.jsonl")))]
        assert val and _contained(val, crawl) == 0
        assert r["disjointness"][f"seed {sd}/validation"]["train_crawl"] == 0
        # every run went through `hytron pretrain`: its resolved config and metrics are there
        assert json.loads((out / f"seed{sd}" / "runs" / "nvfp4" / "config.json").read_text())["precision"] == "nvfp4"


@pytest.mark.slow
def test_reproduce_reasoning_quick(tmp_path, capsys):
    from hytron.claims.reasoning import MODELS, select_on_dev

    out = tmp_path / "reasoning"
    r = _reproduce("reasoning", out, capsys)
    h, d = r["headline"], r["details"]
    assert "1,000 paired test problems" in r["rule"] and ">= 5" in r["rule"]
    gates = {g["name"]: g for g in r["gates"]}
    assert set(gates) == {"thinking beats answer-only SFT", "search traces are verbose", "enough paired test problems"}
    assert not gates["enough paired test problems"]["passed"] and r["verdict"] == "not valid"  # quick: 12 problems
    assert gates["search traces are verbose"]["passed"]  # a property of the data: search >= 5x the direct path
    for sd in ("0", "1"):
        res = d["results"][sd]
        assert set(res) == set(MODELS)
        for name, m in res.items():
            assert m["mean_total_tokens"] == pytest.approx(m["mean_thinking_tokens"] + m["mean_answer_tokens"])
            budgets = [c["budget"] for c in m["curve"]]
            assert budgets == (["no_think"] if name == "answer-only SFT" else r["settings"]["budgets"])
            assert budgets[0] in (0, "no_think")  # budget 0 (no thinking) is always measured
        assert res["answer-only SFT"]["mean_thinking_tokens"] == 0
        sel = d["selection"][sd]  # "after" is the stage chosen on dev, by dev figures only
        assert sel["chosen"] == select_on_dev(sel["before"], sel["candidates"], r["settings"]["select_tolerance"])
        assert h["dev"][sd]["after"] == sel["candidates"][sel["chosen"]]
    # per-seed values; the token ratio is a geometric mean with an exponentiated interval
    change, ratio = h["criteria"]
    ratios = [max(d["results"][sd]["before"]["mean_thinking_tokens"], 0) /
              max(d["results"][sd]["after"]["mean_thinking_tokens"], 1.0) for sd in ("0", "1")]
    assert ratio["per_seed"] == pytest.approx(ratios)
    assert ratio["mean"] == pytest.approx(math.sqrt(ratios[0] * ratios[1]))
    if ratio["ci95"]:
        assert 0 < ratio["ci95"][0] <= ratio["mean"] <= ratio["ci95"][1]
    assert change["per_seed"] == pytest.approx([100 * (d["results"][sd]["after"]["accuracy"]
                                                       - d["results"][sd]["before"]["accuracy"]) for sd in ("0", "1")])
    # each seed generates its own problems: every split's hash differs between seeds
    h0, h1 = r["data_hashes"]["seed 0"], r["data_hashes"]["seed 1"]
    assert set(h0) == {"test", "dev", "sft", "distill_0", "rl"} and all(h0[k] != h1[k] for k in h0)
    # held out by content, checked from the files the run left: no test or dev problem (its numbers and target,
    # in any order) is asked in any SFT, distillation or GRPO pool of its seed
    for sd in (0, 1):
        assert all(v == 0 for k, per in r["disjointness"].items() if k.startswith(f"seed {sd}/") for v in per.values())
        work = out / f"seed{sd}"
        training = [m["content"] for row in _jsonl(sorted(work.glob("*.jsonl"))) for m in row["messages"]
                    if m["role"] == "user"] + _texts(work / "problems" / "rl.jsonl")
        assert len(training) >= 3 * r["settings"]["train_problems"]

        def key(q):
            m = re.fullmatch(r"Which of these numbers sum to (\d+): ([\d, ]+)\?( /no_think)?", q)
            return m.group(1), tuple(sorted(int(x) for x in m.group(2).split(", ")))

        seen = {key(q) for q in training}
        for split in ("test", "dev"):
            questions = _texts(work / "problems" / f"{split}.jsonl")
            assert questions and not {key(q) for q in questions} & seen, split
    assert (out / "seed0" / "record.json").is_file()


def test_reasoning_splits_are_disjoint_by_content_and_regenerated_per_seed():
    from hytron.claims.reasoning import QUICK, content_key, disjointness, seed_problems

    a, b = seed_problems(QUICK, 0), seed_problems(QUICK, 1)
    assert [len(a[k]) for k in ("test", "dev", "sft")] == [QUICK.test_problems, QUICK.dev_problems,
                                                           QUICK.train_problems]
    keys = [content_key(p) for split in a.values() for p in split]
    assert len(keys) == len(set(keys))  # no problem twice, in any split, in any order of its numbers
    assert all(v == 0 for per in disjointness(a).values() for v in per.values())
    assert [p.question for p in a["test"]] != [p.question for p in b["test"]]
    assert [p.question for p in a["sft"]] == [p.question for p in seed_problems(QUICK, 0)["sft"]]  # deterministic
    # a problem whose numbers are merely re-ordered counts as the same content
    from hytron.reasoning.tasks import Problem

    p = a["test"][0]
    numbers, target = p.question.split(": ")[1].rstrip("?").split(", "), p.question.split(" sum to ")[1].split(":")[0]
    shuffled = Problem("x", p.kind, f"Which of these numbers sum to {target}: {', '.join(reversed(numbers))}?",
                       p.answer, p.steps, p.restatement)
    leaked = {**a, "sft": [*a["sft"], shuffled]}
    assert disjointness(leaked)["test"]["sft"] == 1


def _record(before=(0.8, 150.0), after=(0.79, 20.0), answer_only=0.3, search=150.0, direct=10.0, n_test=1000):
    curve = lambda acc, think: [{"budget": 0, "accuracy": 0.1, "mean_thinking_tokens": 0.0},
                                {"budget": None, "accuracy": acc, "mean_thinking_tokens": think}]
    model = lambda acc, think, budgets=True: {
        "accuracy": acc, "mean_thinking_tokens": think, "mean_answer_tokens": 9.0, "mean_total_tokens": think + 9.0,
        "curve": curve(acc, think) if budgets else [{"budget": "no_think", "accuracy": acc,
                                                    "mean_thinking_tokens": 0.0}]}
    return {"results": {"before": model(*before), "after": model(*after), "direct SFT": model(0.7, 10.0),
                        "answer-only SFT": model(answer_only, 0.0, budgets=False)},
            "trace_tokens": {"search": search, "direct": direct}, "pool_sizes": {"test": n_test},
            "data_hash": {"test": "h"}, "disjointness": {"test": {"sft": 0}}, "dev": {},
            "paired_change_within_seed": {}, "selection": {"chosen": "grpo"}, "stages": {}, "seconds": {},
            "total_seconds": 1.0}


@pytest.mark.parametrize("case, verdict, failed", [
    ({}, "met", []),
    ({"after": (0.70, 20.0)}, "not met", []),  # accuracy fell by 10 points
    ({"after": (0.80, 100.0)}, "not met", []),  # only 1.5x fewer thinking tokens
    ({"answer_only": 0.7}, "not valid", ["thinking beats answer-only SFT"]),  # thinking gains only 10 points
    ({"search": 40.0}, "not valid", ["search traces are verbose"]),  # search only 4x the direct path
    ({"n_test": 200}, "not valid", ["enough paired test problems"]),
])
def test_reasoning_gates_and_criteria_on_constructed_records(tmp_path, case, verdict, failed):
    from hytron.claims.reasoning import FULL, summarize

    wobble = [(0.0, 1.0), (0.002, 1.1), (-0.003, 0.95)]  # small per-seed differences, so intervals are finite
    records = {}
    for sd, (da, ft) in enumerate(wobble):
        rec = _record(**case)
        for name in ("before", "after"):
            m = rec["results"][name]
            m["accuracy"] += da if name == "after" else 0.0
            m["mean_thinking_tokens"] *= ft if name == "after" else 1.0
        records[sd] = rec
    r = summarize(tmp_path, FULL, records, 0.0, log=lambda m: None)
    assert r["verdict"] == verdict
    assert [g["name"] for g in r["gates"] if not g["passed"]] == failed
    ratio = r["headline"]["criteria"][1]
    logs = [math.log(150.0 / (20.0 * f)) for _, f in wobble] if not case else None
    if logs:  # the geometric mean and the interval of the mean log
        assert ratio["mean"] == pytest.approx(math.exp(sum(logs) / 3))
        assert ratio["ci95"][0] > 5 and ratio["verdict"] == "met"
    assert json.loads((tmp_path / "result.json").read_text())["verdict"] == verdict


def test_paired_change_within_a_seed():
    from hytron.claims.reasoning import paired_change

    c = paired_change([True, True, False, False], [True, False, True, True])
    assert c["points"] == pytest.approx(25.0) and c["only_before"] == 1 and c["only_after"] == 2 and c["n"] == 4
    assert c["ci95"][0] < 25 < c["ci95"][1]
    with pytest.raises(ValueError, match="equal"):
        paired_change([True], [True, False])


def test_reproduce_rejects_unknown_claims(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "speed", "--out", "x"])
    assert "invalid choice" in capsys.readouterr().err


def test_equal_accuracy_ratio():
    from hytron.claims.reasoning import equal_accuracy_ratio

    before = {"accuracy": 0.80, "mean_thinking_tokens": 100.0, "curve": []}
    after = {"curve": [{"accuracy": 0.50, "mean_thinking_tokens": 5.0},
                       {"accuracy": 0.795, "mean_thinking_tokens": 20.0},
                       {"accuracy": 0.82, "mean_thinking_tokens": 40.0}]}
    assert equal_accuracy_ratio(before, after) == pytest.approx(5.0)
    assert equal_accuracy_ratio({**before, "accuracy": 0.95}, after) is None
    assert equal_accuracy_ratio({**before, "accuracy": 0.0}, after) is None  # nothing solved: no ratio
    zero = {"curve": [{"accuracy": 0.9, "mean_thinking_tokens": 0.0}]}
    assert equal_accuracy_ratio(before, zero) == pytest.approx(100.0)  # at least one token in the denominator


def test_tinyweb_junk_share_sets_the_junk_documents_and_keeps_the_mix(tmp_path):
    from hytron.data.tinyweb import JUNK_KINDS, PROPORTIONS, generate, proportions, read_labels

    p = proportions(0.8)
    assert sum(p.values()) == pytest.approx(1) and sum(p[k] for k in JUNK_KINDS) == pytest.approx(0.8)
    assert p["spam"] / p["gibberish"] == pytest.approx(PROPORTIONS["spam"] / PROPORTIONS["gibberish"])
    assert proportions(None) == PROPORTIONS
    meta = generate(tmp_path, n_docs=1000, junk_share=0.8)
    junk = sum(lab["kind"] in JUNK_KINDS for lab in read_labels(tmp_path).values())
    assert meta["junk_share"] == pytest.approx(0.8) and 0.75 < junk / 1000 < 0.85
    with pytest.raises(ValueError, match="junk_share"):
        proportions(1.0)


def test_select_on_dev():
    from hytron.claims.reasoning import select_on_dev

    before = {"accuracy": 0.60, "mean_thinking_tokens": 100.0}
    cands = {"distill_0": {"accuracy": 0.62, "mean_thinking_tokens": 40.0},
             "distill_1": {"accuracy": 0.595, "mean_thinking_tokens": 30.0},
             "grpo": {"accuracy": 0.55, "mean_thinking_tokens": 10.0}}
    assert select_on_dev(before, cands, 1.0) == "distill_1"  # fewest tokens within 1 point
    assert select_on_dev(before, cands, 0.0) == "distill_0"
    assert select_on_dev(before, cands, 10.0) == "grpo"
    worse = {n: {**c, "accuracy": c["accuracy"] - 0.2} for n, c in cands.items()}
    assert select_on_dev(before, worse, 1.0) == "distill_0"  # none within tolerance: the most accurate on dev
    edge = {"a": {"accuracy": 0.54, "mean_thinking_tokens": 5.0}, "b": {"accuracy": 0.9, "mean_thinking_tokens": 50.0}}
    assert select_on_dev({"accuracy": 0.55}, edge, 1.0) == "a"  # exactly 1 point below counts (100 * 0.54 < 55 - 1)
