"""Every `hytron reproduce CLAIM --quick` runs on a CPU and writes result.json (headline, settings, seed) + PNGs."""

import json
import math

import pytest

from hytron.cli import main

pytest.importorskip("matplotlib", reason="claim plots need matplotlib (pip install 'hytron[eval]')")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a loaded 2-core CI machine two OpenMP workers fight other jobs and run 3-10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _reproduce(claim, out, capsys):
    assert main(["reproduce", claim, "--out", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["claim"] == claim and isinstance(result["seed"], int) and result["settings"]
    assert result["plots"] and json.dumps(result["headline"], indent=2).splitlines()[1] in printed
    for name in result["plots"]:
        assert (out / name).read_bytes()[:8] == PNG, f"{name} is not a PNG"
    return result


def test_reproduce_hybrid_quick(tmp_path, capsys):
    r = _reproduce("hybrid", tmp_path / "hybrid", capsys)
    h = r["headline"]
    p = h["parameters"]
    assert abs(p["hybrid"] - p["attention"]) / p["hybrid"] < 0.01  # equal parameters
    assert "M" not in h["patterns"]["attention"] and "M" in h["patterns"]["hybrid"]
    assert h["context"] == r["settings"]["contexts"][-1] and math.isfinite(h["decode_speedup"])
    # KV memory grows with context for attention; the hybrid holds 1 attention layer in 4 mixers
    pts = r["details"]["points"]
    assert pts["attention"][-1]["state_bytes_per_seq"] > pts["attention"][0]["state_bytes_per_seq"]
    assert h["memory_ratio"] > 2


def test_reproduce_data_quick(tmp_path, capsys):
    r = _reproduce("data", tmp_path / "data", capsys)
    runs = r["details"]["runs"]
    assert set(runs) == {"raw", "curated", "curated+rephrased"}
    final_tokens = {n: v["evals"][-1]["tokens"] for n, v in runs.items()}
    assert len(set(final_tokens.values())) == 1  # same tokens for every run
    h = r["headline"]
    assert h["raw_final_val_loss"] == runs["raw"]["evals"][-1]["val_loss"]
    assert h["raw_tokens"] <= final_tokens["raw"]
    for name in ("curated", "curated+rephrased"):
        t = h[f"{name}_tokens_to_raw_loss"]
        reached = min(e["val_loss"] for e in runs[name]["evals"]) <= h["raw_final_val_loss"]
        assert (t is not None) == reached
        if t is not None:
            assert h[f"{name}_speedup"] == pytest.approx(h["raw_tokens"] / t)
    assert all(0 <= e["qa_acc"] <= 1 for v in runs.values() for e in v["evals"])


def test_reproduce_nvfp4_quick(tmp_path, capsys):
    r = _reproduce("nvfp4", tmp_path / "nvfp4", capsys)
    h = r["headline"]
    runs = r["details"]["runs"]
    base = runs["bf16"]["evals"][-1]["val_loss"]
    assert h["gaps"]["bf16"] == 0.0
    assert h["nvfp4_gap"] == pytest.approx((runs["nvfp4"]["evals"][-1]["val_loss"] - base) / base)
    assert abs(h["nvfp4_gap"]) < 0.2  # a few steps of 4-bit training track bf16 closely, not wildly
    # the runs saw identical batches: their first training losses agree to quantization noise only
    assert runs["nvfp4"]["train"][0]["loss"] == pytest.approx(runs["bf16"]["train"][0]["loss"], rel=0.02)


def test_reproduce_rejects_unknown_claims(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "speed", "--out", "x"])
    assert "invalid choice" in capsys.readouterr().err


def test_reproduce_reasoning_quick(tmp_path, capsys):
    r = _reproduce("reasoning", tmp_path / "reasoning", capsys)
    h, d = r["headline"], r["details"]
    assert h["thinking_tokens_before"] == d["before"]["mean_thinking_tokens"]
    assert h["token_ratio"] == pytest.approx(d["before"]["mean_thinking_tokens"]
                                             / max(d["after"]["mean_thinking_tokens"], 1e-9))
    for side in ("before", "after"):
        budgets = [c["budget"] for c in d[side]["curve"]]
        assert budgets == r["settings"]["budgets"]
        capped = [c for c in d[side]["curve"] if c["budget"] == 0]
        assert capped and capped[0]["mean_thinking_tokens"] <= 1  # budget 0 (grace 0): thinking closed at once


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
