"""Generators are deterministic per seed and their answers are right, checked here by independent code."""

import itertools
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
    if p.kind == "subset_sum":  # brute force over every subset
        target, listed = re.fullmatch(r"Which of these numbers sum to (\d+): ([\d, ]+)\?", q).groups()
        numbers = [int(x) for x in listed.split(", ")]
        hits = [c for r in range(1, len(numbers) + 1) for c in itertools.combinations(numbers, r)
                if sum(c) == int(target)]
        assert len(hits) == 1, (q, hits)  # exactly one subset: accuracy is well defined
        return ", ".join(map(str, sorted(hits[0])))
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
    ps = generate_problems(["arithmetic", "ordering", "world"], 90, seed=0)
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


# ---- subset-sum: the task whose shortest correct trace has to be found -------------------------------------------
def _search_lines(trace: str) -> list[tuple[list[int], int, str]]:
    out = []
    for line in trace.split("\n"):
        path, total, mark = re.fullmatch(r"([\d+]+)=(\d+)(?: (over|found))?", line).groups()
        out.append(([int(x) for x in path.split("+")], int(total), mark or ""))
    return out


def test_search_trace_is_a_depth_first_search_that_backtracks_and_finds_the_answer():
    from hytron.reasoning.tasks import subset_sum_instance
    from hytron.reasoning.traces import search_trace

    backtracked = 0
    for p in generate_problems("subset_sum", 200, seed=7):
        numbers, target = subset_sum_instance(p)
        lines = _search_lines(search_trace(p))
        assert lines[0][0] == numbers[:1]  # the search starts from the first number listed
        for k, (path, total, mark) in enumerate(lines):
            assert sum(path) == total and len(set(path)) == len(path) and set(path) <= set(numbers)
            assert [numbers.index(x) for x in path] == sorted(numbers.index(x) for x in path)  # in question order
            assert mark == ("found" if total == target else "over" if total > target else "")
            assert (mark == "found") == (k == len(lines) - 1)  # stops at the first hit
            if k:  # each node extends its parent, or backtracks to an ancestor and tries the next number
                prev = lines[k - 1][0]
                extends = path[:-1] == prev and lines[k - 1][2] == ""
                sibling = len(path) <= len(prev) and path[:-1] == prev[:len(path) - 1]
                assert extends or sibling, (prev, path)
                backtracked += len(path) < len(prev)
        found = lines[-1][0]
        assert ", ".join(map(str, sorted(found))) == p.answer
        assert check_answer(p, answer_text(", ".join(map(str, found))))
    assert backtracked > 200  # the search really returns to shallower nodes


def test_search_length_depends_on_the_order_and_the_direct_path_is_far_shorter():
    from hytron.reasoning.tasks import Problem, subset_sum_instance
    from hytron.reasoning.traces import search_trace

    ps = generate_problems("subset_sum", 200, seed=1)
    search = [search_trace(p) for p in ps]
    reordered = []
    for p in ps:  # the same numbers and target, listed in reverse: a different search, of another length
        numbers, target = subset_sum_instance(p)
        q = f"Which of these numbers sum to {target}: {', '.join(map(str, reversed(numbers)))}?"
        reordered.append(search_trace(Problem(p.id, p.kind, q, p.answer, p.steps, p.restatement)))
    assert sum(a.count("\n") != b.count("\n") for a, b in zip(search, reordered)) > 100
    direct = [concise_trace(p) for p in ps]
    for p, d in zip(ps, direct):  # the direct path: the chosen numbers, checked, in one line
        path, total, mark = _search_lines(d)[0]
        assert ", ".join(map(str, path)) == p.answer and mark == "found"
    assert sum(map(len, search)) / sum(map(len, direct)) > 10


def test_subset_sum_verifier_accepts_any_correct_subset_only():
    p = generate_problems("subset_sum", 1, seed=0)[0]  # 41 from 20, 4, 5, 15, 19, 12: 4 + 5 + 12 + 20
    assert p.question == "Which of these numbers sum to 41: 20, 4, 5, 15, 19, 12?" and p.answer == "4, 5, 12, 20"
    assert check_answer(p, "The answer is 4, 5, 12, 20.")
    assert check_answer(p, "<think>\n5=5\n</think>\nThe answer is 20, 12, 5, 4.")  # any order
    assert not check_answer(p, "The answer is 4, 5, 12.")  # wrong sum
    assert not check_answer(p, "The answer is 20, 20, 1.")  # repeated, and not given
    assert not check_answer(p, "The answer is 41.")  # not a given number
    assert not check_answer(p, "The answer is four.")
    assert not check_answer(p, "")
    with pytest.raises(ValueError, match="min_pick"):
        generate_problems("subset_sum", 1, 0, subset_sum={"min_pick": 5, "max_pick": 3})
