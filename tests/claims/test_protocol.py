"""The claims' common protocol on constructed inputs: log-scale intervals for ratios, validity gates that turn a
verdict into "not valid", the nvfp4 metric and its null-arm gate, seeds reused from disk, and the pretrain
evaluation hook every claim trains through."""

import json
import math

import pytest
import torch

from hytron.claims import common, nvfp4, stats
from hytron.pipelines import experiment


def test_log_estimate_is_the_geometric_mean_with_an_exponentiated_t_interval():
    vals = [2.0, 8.0, 4.0]
    est = stats.log_estimate(vals)
    logs = [math.log(v) for v in vals]
    m = sum(logs) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / 2)
    half = 4.303 * sd / math.sqrt(3)  # t(0.975, 2)
    assert est["mean"] == pytest.approx(4.0)
    assert est["ci95"] == pytest.approx([math.exp(m - half), math.exp(m + half)])
    assert est["ci95"][0] > 0  # a ratio's interval never goes negative, unlike the raw t-interval
    assert stats.estimate(vals)["ci95"][0] < 0
    # a 2x and a 0.5x seed cancel on the log scale
    assert stats.log_estimate([2.0, 0.5])["mean"] == pytest.approx(1.0)
    assert stats.log_estimate([3.0, None])["ci95"] is None and stats.log_estimate([3.0, None])["missing"] == 1
    with pytest.raises(ValueError, match="ratios must be > 0"):
        stats.log_estimate([1.0, -2.0])


def test_a_failed_gate_makes_the_verdict_not_valid_whatever_the_interval():
    met = stats.criterion("speed-up", stats.log_estimate([6.0, 6.2, 5.9]), 4.0)
    not_met = stats.criterion("speed-up", stats.log_estimate([1.5, 1.6, 1.4]), 4.0)
    assert met["verdict"] == "met" and not_met["verdict"] == "not met"
    ok, bad = stats.gate("control works", True, 0.7, ">= 0.6"), stats.gate("control works", False, 0.3, ">= 0.6")
    assert stats.claim_verdict([met], [ok]) == "met"
    assert stats.claim_verdict([met], [ok, bad]) == "not valid"
    assert stats.claim_verdict([not_met], [bad]) == "not valid"
    assert stats.claim_verdict([not_met], []) == "not met"
    assert "not valid" in stats.VERDICTS


def test_write_result_takes_the_verdict_from_criteria_and_gates(tmp_path):
    crit = [stats.criterion("x", stats.estimate([1.0, 1.1]), 0.5)]
    res = common.write_result(tmp_path, "demo", {"criteria": crit}, {"a": 1}, [0, 1], {}, [], 0.0, data_hashes={},
                              disjointness={}, tried_settings=[], rule="x >= 0.5",
                              gates=[stats.gate("g", False, 0, "never")])
    assert res["verdict"] == "not valid" == json.loads((tmp_path / "result.json").read_text())["verdict"]
    assert res["rule"] == "x >= 0.5" and res["gates"][0]["passed"] is False


def _run(losses: list[float], steps: list[int], diverged: bool = False) -> dict:
    return {"evals": [{"step": s, "val_loss": v} for s, v in zip(steps, losses)], "diverged": diverged}


def test_nvfp4_late_gap_averages_the_last_fifth_paired_by_step():
    steps = [20, 40, 60, 80, 100]
    base = _run([5.0, 4.0, 3.0, 2.0, 2.0], steps)
    run = _run([9.0, 9.0, 9.0, 2.02, 2.04], steps)  # only steps 80 and 100 are in the last 20% of 100 steps
    assert nvfp4.late_gap(run, base, 100, 0.2) == pytest.approx((0.01 + 0.02) / 2)
    assert nvfp4.late_gap(_run([2.0], [100], diverged=True), base, 100, 0.2) is None


def test_nvfp4_null_arm_gate():
    tight = stats.estimate([0.001, -0.002, 0.0005, 0.0])
    wide = stats.estimate([0.01, -0.012, 0.004, 0.0])
    assert nvfp4.null_gate(tight, 0.005)["passed"]
    assert not nvfp4.null_gate(wide, 0.005)["passed"]
    assert not nvfp4.null_gate(stats.estimate([0.001]), 0.005)["passed"]  # one seed: no interval, not shown


def test_pretrain_hook_and_emulated_bf16_kept_blocks(tmp_path):
    """The claims' loop is `hytron pretrain`: the hook's metrics land in metrics.jsonl at every evaluation, and a
    resumed run returns the same records; on a CPU, nvfp4's kept block computes in emulated bf16."""
    from hytron.data.mix import single_component_blend
    from hytron.lowp import QuantLinear
    from hytron.packing import pack
    from hytron.tokenizer import Tokenizer
    from hytron.train.setup import apply_precision

    texts = [f"document {i} says the river {i % 7} flows into lake {i % 5}." for i in range(200)]
    src = tmp_path / "src"
    src.mkdir()
    (src / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tok = Tokenizer.train(iter(texts), vocab_size=300)
    pack(single_component_blend([str(src)], validation_fraction=0.0, seed=0), tok, tmp_path / "packed")
    s = experiment.run_shape(steps=4, batch_size=2, seq_len=16, eval_every=2, warmup_steps=1)
    calls = []

    def hook(model):
        calls.append(model.training)
        return {"probe": 1.0 * len(calls)}

    r = experiment.pretrain_tracked(tmp_path / "packed", tok.vocab_size, s, hook, out=tmp_path / "run",
                                log=lambda m: None)
    assert [e["step"] for e in r["evals"]] == [2, 4] and [e["probe"] for e in r["evals"]] == [1.0, 2.0]
    assert calls == [False, False]  # evaluated in eval mode
    assert [t["step"] for t in r["train"]] == [1, 2, 3, 4]
    again = experiment.pretrain_tracked(tmp_path / "packed", tok.vocab_size, s, hook, out=tmp_path / "run",
                                    log=lambda m: None)
    assert again["train"] == r["train"] and len(calls) == 2  # finished: nothing re-ran
    (tmp_path / "run" / "summary.json").unlink()  # killed after the final checkpoint, before the summary
    third = experiment.pretrain_tracked(tmp_path / "packed", tok.vocab_size, s, hook, out=tmp_path / "run",
                                    log=lambda m: None)
    assert len(calls) == 3 and [e["step"] for e in third["evals"]] == [2, 4]  # the final step evaluated once
    assert third["train"] == r["train"]

    from hytron.model import HybridConfig, HybridLM

    model = HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=300))
    recipe = apply_precision(model, "nvfp4+switch", torch.device("cpu"), decay_fraction=0.2)
    assert recipe.high_precision == "bf16" and recipe.high_precision_from == pytest.approx(0.8)
    last = model.backbone.layers[-1]
    kept = [m for m in last.modules() if isinstance(m, QuantLinear)]
    assert kept and all(m.recipe.name == "bf16" for m in kept)  # the kept block: bf16 operands, not fp32
    lin = kept[0]
    x = torch.randn(3, lin.in_features)
    ref = torch.nn.functional.linear(x.bfloat16().float(), lin.weight.bfloat16().float(),
                                     None if lin.bias is None else lin.bias)
    assert torch.allclose(lin(x), ref, atol=1e-6)
    plain = torch.nn.functional.linear(x, lin.weight, lin.bias)
    assert not torch.allclose(lin(x), plain, atol=1e-7)
    assert apply_precision(HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=300)), "fp32") is None


def test_t_critical_beyond_30_degrees_of_freedom_follows_the_tables():
    # exact t(0.975, df): 31 -> 2.0395, 50 -> 2.0086, 100 -> 1.9840, 1000 -> 1.9623; 1.96 at once was too narrow
    for df, exact in ((30, 2.042), (31, 2.0395), (50, 2.0086), (100, 1.9840), (1000, 1.9623)):
        assert stats.t_critical(df) == pytest.approx(exact, abs=1e-3)
    values = [stats.t_critical(df) for df in range(25, 2000)]
    assert all(a >= b for a, b in zip(values, values[1:])) and values[-1] > 1.96  # falls smoothly towards 1.96


def test_a_diverged_seed_is_missing_in_a_paired_difference_not_a_crash():
    d = stats.difference([0.03, None, 0.04, 0.05], [0.01, 0.02, None, 0.02])
    assert d["n"] == 2 and d["missing"] == 2 and d["mean"] == pytest.approx(0.025)
    assert d["per_seed"] == [pytest.approx(0.02), None, None, pytest.approx(0.03)]
    with pytest.raises(ValueError, match="one per seed"):
        stats.difference([1.0, 2.0], [1.0])


def test_non_finite_values_are_missing_and_result_json_stays_strict_json():
    est = stats.estimate([1.0, float("nan"), 3.0, float("inf")])
    assert est["n"] == 2 and est["missing"] == 2 and est["per_seed"] == [1.0, None, 3.0, None]
    json.loads(json.dumps(est), parse_constant=lambda c: pytest.fail(f"{c} in result.json"))
    ratio = stats.log_estimate([2.0, 4.0, 8.0])
    assert ratio["sd"] == pytest.approx(stats.estimate([2.0, 4.0, 8.0])["sd"])  # the ratios' own sample sd


def test_a_failed_gate_leaves_no_criterion_reading_met(tmp_path):
    crit = [stats.criterion("x", stats.estimate([1.0, 1.1, 1.05]), 0.5)]
    assert crit[0]["verdict"] == "met"
    res = common.write_result(tmp_path, "demo", {"criteria": crit}, {"a": 1}, [0, 1, 2], {}, [], 0.0,
                              data_hashes={}, disjointness={}, tried_settings=[], rule="x >= 0.5",
                              gates=[stats.gate("null arm", None, None, "interval within ±0.5%")])
    c = json.loads((tmp_path / "result.json").read_text())["headline"]["criteria"][0]
    assert res["verdict"] == "not valid" and c["verdict"] == "not valid" and c["interval_verdict"] == "met"
    stats.apply_gates(crit, [stats.gate("g", False, 0, "never")])  # idempotent: the interval's reading survives
    assert crit[0]["interval_verdict"] == "met"
    ok = [stats.criterion("x", stats.estimate([1.0, 1.1, 1.05]), 0.5)]
    stats.apply_gates(ok, [stats.gate("g", True, 1, "always")])
    assert ok[0]["verdict"] == "met" and "interval_verdict" not in ok[0]


def _record(losses: dict[str, list[float]], steps: list[int], diverged: tuple[str, ...] = ()) -> dict:
    runs = {n: {"evals": [{"step": s, "tokens": 100 * s, "val_loss": v, "val_bpb": v} for s, v in zip(steps, ls)],
                "first_loss": 6.0, "diverged": n in diverged, "step_time_median_s": 0.1, "parameters": 1}
            for n, ls in losses.items()}
    return {"runs": runs, "validation_docs": 6, "validation_removed": 0, "data_hash": {}, "overlap": {}}


def test_nvfp4_summary_with_a_diverged_run_is_not_valid_not_a_crash(tmp_path):
    pytest.importorskip("matplotlib")
    s = nvfp4.NVFP4ClaimSettings(run=experiment.run_shape(steps=10, eval_every=5),
                                 recipes=["bf16", "fp32", "nvfp4", "mxfp4"])
    ok = {"bf16": [3.0, 2.0], "fp32": [3.0, 2.001], "nvfp4": [3.1, 2.01], "mxfp4": [3.2, 2.05]}
    records = {0: _record(ok, [5, 10]), 1: _record({**ok, "nvfp4": [3.1]}, [5, 10], diverged=("nvfp4",)),
               2: _record(ok, [5, 10])}
    res = nvfp4.summarize(tmp_path, s, records, 0.0, log=lambda m: None)
    gates = {g["name"]: g for g in res["gates"]}
    assert not gates["no run diverged"]["passed"] and gates["no run diverged"]["value"] == ["nvfp4 s1"]
    assert res["verdict"] == "not valid"
    crit = {c["name"]: c for c in res["headline"]["criteria"]}
    assert crit["mxfp4 gap - nvfp4 gap"]["per_seed"][1] is None and crit["mxfp4 gap - nvfp4 gap"]["n"] == 2
    assert all(c["verdict"] == "not valid" for c in crit.values())


def test_precision_names_and_the_late_switch_at_the_wsd_decay_start():
    from hytron.config import ConfigError
    from hytron.model import HybridConfig, HybridLM
    from hytron.train.schedule import lr_at
    from hytron.train.setup import apply_precision

    fresh = lambda: HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=64))  # noqa: E731
    for device in ("cpu", "cuda"):  # +switch on a name with nothing lower to switch from: refused on every device
        for name in ("bf16+switch", "fp32+switch", "auto+switch"):
            with pytest.raises(ConfigError, match=r"\+switch applies to a low-precision recipe"):
                apply_precision(fresh(), name, torch.device(device))
    with pytest.raises(ConfigError, match=r"unknown 'nvfp5'; known: auto, fp32, bf16, .*RECIPE\+switch"):
        apply_precision(fresh(), "nvfp5")
    # the switch happens at the step where the WSD decay starts, also when decay_fraction * steps is not whole
    for steps in (6, 7, 9, 15, 25, 37, 400):
        for d in (0.1, 0.2, 0.25, 0.3):
            recipe = apply_precision(fresh(), "nvfp4+switch", torch.device("cpu"), d, total_steps=steps)
            lrs = [lr_at(k, base_lr=1.0, total_steps=steps, warmup_steps=1, decay_fraction=d) for k in range(steps)]
            decay = next(k for k, lr in enumerate(lrs) if lr < 1.0)
            assert [k for k in range(steps) if recipe.should_switch(k, steps)][0] == decay, (steps, d)
    # after the switch, nvfp4's own layers compute the forward in the same emulated bf16 as the bf16 arm
    from hytron.lowp import QuantLinear
    from hytron.train.setup import switch_precision

    model = fresh()
    recipe = apply_precision(model, "nvfp4+switch", torch.device("cpu"), 0.2, total_steps=10)
    lin = next(m for m in model.backbone.layers[0].modules() if isinstance(m, QuantLinear))
    assert lin.recipe.name == "nvfp4"
    x = torch.randn(4, lin.in_features)
    ref = torch.nn.functional.linear(x.bfloat16().float(), lin.weight.bfloat16().float(), lin.bias)
    switch_precision(model, recipe, 7, 10)
    assert not torch.allclose(lin(x), ref, atol=1e-5)  # step 7: still 4-bit
    switch_precision(model, recipe, 8, 10)
    assert torch.allclose(lin(x), ref, atol=1e-6)  # step 8, the decay's first: bf16 operands, fp32 accumulation


def test_nvfp4_claim_refuses_recipes_it_cannot_judge_before_any_run(tmp_path):
    # without nvfp4 there is no criterion (the verdict plot crashed after every run had trained); bf16+switch is no
    # recipe at all (refused by the training setup, after the seed's first runs)
    for recipes, match in ((["bf16", "fp32", "mxfp4"], "must include 'nvfp4'"), (["nvfp4", "bf16+switch"], "unknown")):
        with pytest.raises(ValueError, match=match):
            nvfp4.run_seed(tmp_path, nvfp4.NVFP4ClaimSettings(recipes=recipes), 0, log=lambda m: None)
    assert not any(tmp_path.iterdir())  # refused before any data was generated


def test_hybrid_batches_held_by_max_batch_fail_a_gate_and_bad_settings_are_refused():
    from dataclasses import replace

    from hytron.claims import hybrid
    from hytron.model import HybridLM

    s = hybrid.QUICK
    models = {n: HybridLM(c) for n, c in (("hybrid", hybrid.hybrid_config(s)),
                                          ("attention", hybrid.attention_twin(hybrid.hybrid_config(s))))}
    ctx = s.input_tokens + s.output_tokens

    def batches(cap, budgets):
        return {b: {n: hybrid.largest_batch(m, ctx, b * 2**20, cap) for n, m in models.items()} for b in budgets}

    assert hybrid.capped(batches(s.max_batch, s.memory_budgets_mib), s.memory_budgets_mib, s.max_batch) == {}
    # at 8 and 16 MiB (the old QUICK budgets) both models were held at batch 16: the sweep compared 16 with 16
    held = batches(16, [8, 16])
    assert all(bt == 16 for b in (8, 16) for bt, _ in held[b].values())
    assert hybrid.capped(held, [8, 16], 16) == {"8": ["hybrid", "attention"], "16": ["hybrid", "attention"]}
    for bad in ({"decode_tokens": 0}, {"memory_budgets_mib": []}, {"contexts": []}):
        with pytest.raises(ValueError, match="hybrid claim"):
            hybrid.hybrid_config(replace(s, **bad))
