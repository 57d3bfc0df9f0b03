"""Generators are deterministic per seed and their answers are right, checked here by independent code."""

import random
import re

import pytest

from hytron.reasoning.tasks import GENERATORS, answer_text, check_answer, extract_answer, generate_problems
from hytron.reasoning.traces import concise_trace, truncate_trace, verbose_trace

KINDS = sorted(GENERATORS)


def independent_answer(p) -> str:
    """Solve the question from its text alone, without the generator's code."""
    q = p.question
    if p.kind == "arithmetic":
        expr = re.fullmatch(r"Compute ([\d +\-*]+)\.", q).group(1)
        tokens = expr.split()
        value = int(tokens[0])
        for op, b in zip(tokens[1::2], tokens[2::2]):
            value = {"+": value + int(b), "-": value - int(b), "*": value * int(b)}[op]
        return str(value)
    if p.kind == "world":
        if "thousand people live in" in q:
            return str(sum(int(x) for x in re.findall(r"has (\d+) thousand people", q)))
        years = [int(y) for y in re.findall(r"founded in (\d+)", q)]
        return str(abs(years[0] - years[1]))
    if p.kind == "ordering":
        items = re.findall(r"(\w+) \((\d+) m\)", q)
        return ", ".join(name for name, _ in sorted(items, key=lambda t: int(t[1])))
    raise AssertionError(p.kind)


@pytest.mark.parametrize("kind", KINDS)
def test_answers_are_correct_by_an_independent_solver(kind):
    for p in generate_problems(kind, 200, seed=3):
        assert p.answer == independent_answer(p), p.question
        assert check_answer(p, answer_text(p.answer))


def test_arithmetic_step_claims_are_true_and_chain_to_the_answer():
    for p in generate_problems("arithmetic", 200, seed=5):
        prev = None
        for step in p.steps:
            a, op, b, c = re.fullmatch(r"(\d+) ([+\-*]) (\d+) = (\d+)", step.claim).groups()
            assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)
            assert prev is None or int(a) == prev
            prev = int(c)
        assert str(prev) == p.answer and 2 <= len(p.steps) <= 3


@pytest.mark.parametrize("kind", KINDS)
def test_generators_are_deterministic_per_seed(kind):
    a = generate_problems(kind, 50, seed=11)
    assert a == generate_problems(kind, 50, seed=11)
    assert [p.question for p in a] != [p.question for p in generate_problems(kind, 50, seed=12)]
    assert len({p.id for p in a}) == 50


def test_traces_are_deterministic_and_verbose_is_several_times_longer():
    ps = generate_problems(KINDS, 90, seed=0)
    v = [verbose_trace(p, random.Random(i)) for i, p in enumerate(ps)]
    assert v == [verbose_trace(p, random.Random(i)) for i, p in enumerate(ps)]
    c = [concise_trace(p) for p in ps]
    ratio = sum(map(len, v)) / sum(map(len, c))
    assert 3 < ratio < 10, ratio
    for p, trace in zip(ps, v):  # every verbose trace contains the concise one's claims, in order
        assert [line for line in trace.split("\n") if line in set(concise_trace(p).split("\n"))] == \
            concise_trace(p).split("\n")
        cut = truncate_trace(trace, random.Random(0))
        assert trace.startswith(cut) and len(cut) < len(trace)


def test_checker_rejects_wrong_and_missing_answers_and_reads_after_think():
    p = generate_problems("arithmetic", 1, seed=0)[0]
    wrong = str(int(p.answer) + 1)
    assert not check_answer(p, answer_text(wrong))
    assert not check_answer(p, "")
    assert not check_answer(p, p.answer)  # an answer must be stated as one
    assert check_answer(p, f"<think>\nthe answer is {wrong}\n</think>\nThe answer is {p.answer}.")
    assert not check_answer(p, f"<think>\nThe answer is {p.answer}.\n</think>\nThe answer is {wrong}.")
    assert extract_answer("The answer is Riisthed,Iakin, Jorvasa.") == "riisthed, iakin, jorvasa"


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown problem kind.*sudoku"):
        generate_problems(["arithmetic", "sudoku"], 3, 0)
