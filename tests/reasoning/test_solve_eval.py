"""Budgeted solving through hytron.infer: the budget holds within the grace window, /no_think thinks nothing;
evaluation returns the accuracy-vs-budget curve and plots it."""

import pytest

from hytron.reasoning.evaluate import evaluate_reasoning, plot_budget_curves
from hytron.reasoning.generation import Solver
from hytron.reasoning.tasks import generate_problems
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def solver(tok):
    return Solver(tiny_model(vocab_size=tok.vocab_size), tok, max_slots=8)


@pytest.mark.parametrize("budget, grace", [(0, None), (3, 0), (8, None), (12, 4)])
def test_budget_is_never_exceeded_beyond_the_grace_window(solver, budget, grace):
    problems = generate_problems("arithmetic", 6, seed=0)
    tries = solver.solve(problems, max_thinking_tokens=budget, thinking_grace=grace, samples=2, temperature=1.0,
                         max_tokens=60)
    # default grace: ceil(10%); + 1 for the newline forced when the grace runs out mid-line (as `hytron serve`)
    allowed = budget + (grace if grace is not None else -(-budget // 10)) + (budget > 0)
    for attempts in tries:
        for a in attempts:
            assert a.thinking_tokens <= allowed
            if a.thinking_tokens >= budget and a.finish_reason != "length":
                assert solver.tokenizer.think_end_id in a.token_ids  # thinking was closed, then the answer
    unbounded = [a for t in solver.solve(problems, samples=2, temperature=1.0, max_tokens=60) for a in t]
    assert max(a.thinking_tokens for a in unbounded) > allowed  # the random model would think longer


def test_no_think_yields_an_empty_thinking_section(solver):
    problems = generate_problems(["arithmetic", "ordering"], 6, seed=1)
    for attempts in solver.solve(problems, thinking=False, samples=2, temperature=1.0, max_tokens=30):
        for a in attempts:
            assert a.reasoning == "" and a.thinking_tokens == 0
            assert not {solver.tokenizer.think_start_id, solver.tokenizer.think_end_id} & set(a.token_ids)
            assert solver.tokenizer.decode(a.prompt_ids).endswith("<|im_start|>assistant\n<think></think>")


def test_evaluate_reasoning_curve_and_plot(solver, tmp_path):
    res = evaluate_reasoning(solver, kinds="arithmetic", n=4, budgets=[0, 4], max_tokens=40)
    assert [c["budget"] for c in res["curve"]] == [0, 4, None]
    assert res["curve"][0]["mean_thinking_tokens"] == 0
    assert res["curve"][1]["max_thinking_tokens_seen"] <= 6  # 4 + grace ceil(10%) + a forced line end
    assert res["accuracy"] == res["curve"][-1]["accuracy"] and 0 <= res["accuracy"] <= 1
    assert res["no_think"]["mean_thinking_tokens"] == 0 and res["n"] == 4
    pytest.importorskip("matplotlib")
    path = plot_budget_curves({"random": res}, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
