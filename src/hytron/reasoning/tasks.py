"""Verifiable reasoning problems: seeded generators (arithmetic, world, ordering, subset-sum) and the answer checker.

A `Problem` carries its question, its exact answer and the structured steps that solve it; trace styles
(`hytron.reasoning.traces`) render those steps as verbose or concise thinking, and a subset-sum problem also
as a depth-first search. Subset-sum is the task whose shortest correct trace has to be *found*: which of six
numbers sum to the target is not known before searching, so a search trace's length depends on the order in
which it explores, and only the direct path (the chosen numbers, checked) is short. Every generator is a pure
function of its seed: the same `(kind, seed, index)` always gives the same problem, so train and eval sets
are reproducible and disjoint by seed. Answers are computed while the problem is built and are checked
against model output by `check_answer`, which only looks at the final answer (after `</think>`).

    from hytron.reasoning.tasks import generate_problems, check_answer
    problems = generate_problems("arithmetic", n=100, seed=0)
    check_answer(problems[0], "The answer is 9.")
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ANSWER_PREFIX = "The answer is "


@dataclass(frozen=True)
class Step:
    """One reasoning step: the bare claim (concise style), a lead-in and a re-check (verbose style)."""

    claim: str  # "7 + 5 = 12"
    lead: str  # "First I add 5 to 7."
    check: str  # "Check: 12 - 5 = 7, so that is right."


@dataclass(frozen=True)
class Problem:
    """A question with a checkable answer and the steps that reach it."""

    id: str
    kind: str
    question: str
    answer: str
    steps: tuple[Step, ...]
    restatement: str  # the problem in the solver's words (verbose style opens with it)


def answer_text(answer: str) -> str:
    """The assistant's final answer as trained and as parsed back: `The answer is X.`"""
    return f"{ANSWER_PREFIX}{answer}."


_ANSWER_RE = re.compile(r"answer is\s*:?\s*(.+?)\s*\.?\s*$", re.IGNORECASE | re.DOTALL)


def extract_answer(response: str) -> str | None:
    """The answer stated in a response (text after `</think>` when present), or None if none is stated."""
    text = response.split("</think>")[-1].strip()
    if not text:
        return None
    m = _ANSWER_RE.search(text.splitlines()[-1] if "\n" in text else text)
    return _normalise(m.group(1)) if m else None


def _normalise(s: str) -> str:
    return " ".join(s.replace(",", ", ").split()).strip(" .").lower()


def check_answer(problem: Problem, response: str) -> bool:
    """True when the response's stated answer equals the problem's answer (case and spacing ignored); for
    subset-sum, when it names distinct given numbers that sum to the target (any such subset, in any order)."""
    got = extract_answer(response)
    if got is None:
        return False
    if problem.kind == "subset_sum":
        return subset_sum_correct(problem, got)
    return got == _normalise(problem.answer)


_SUBSET_RE = re.compile(r"Which of these numbers sum to (\d+): ([\d, ]+)\?")


def subset_sum_instance(problem: Problem) -> tuple[list[int], int]:
    """(numbers, target) read back from a subset-sum question (the question is the contract, not the generator)."""
    m = _SUBSET_RE.fullmatch(problem.question)
    if m is None:
        raise ValueError(f"not a subset-sum question: {problem.question!r}")
    return [int(x) for x in m.group(2).split(",")], int(m.group(1))


def subset_sum_correct(problem: Problem, answer: str) -> bool:
    """True when `answer` lists (comma or space separated) distinct numbers of the problem summing to its target."""
    numbers, target = subset_sum_instance(problem)
    parts = [x for x in re.split(r"[,\s]+", answer.strip(" .")) if x]
    if not parts or not all(x.isdigit() for x in parts):
        return False
    picked = [int(x) for x in parts]
    return len(set(picked)) == len(picked) and set(picked) <= set(numbers) and sum(picked) == target


# ---- generators ---------------------------------------------------------------------------------------------
_OP_WORD = {"+": ("add", "to", "plus"), "-": ("subtract", "from", "minus"), "*": ("multiply", "by", "times")}


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def arithmetic(rng: random.Random, idx: str, *, min_steps: int = 2, max_steps: int = 3, max_operand: int = 9,
               max_value: int = 30, ops: str = "+-") -> Problem:
    """`Compute 7 + 5 - 3.`: a left-to-right chain of 2-3 small operations, intermediate values in [0, max_value]."""
    n = rng.randint(min_steps, max_steps)
    value = rng.randint(1, max_operand)
    text, steps = [str(value)], []
    for k in range(n):
        while True:
            op, b = rng.choice(ops), rng.randint(1, max_operand)
            new = _apply(value, op, b)
            if 0 <= new <= max_value:
                break
        inverse = {"+": "-", "-": "+", "*": "/"}[op]
        verb, prep, _ = _OP_WORD[op]
        first = "First" if k == 0 else "Then" if k < n - 1 else "Finally"
        lead = f"{first} I {verb} {b} {prep} {value}." if op != "*" else f"{first} I {verb} {value} {prep} {b}."
        check = f"Check: {new} {inverse} {b} = {value}, so {value} {op} {b} = {new} is right."
        steps.append(Step(f"{value} {op} {b} = {new}", lead, check))
        text.append(f"{op} {b}")
        value = new
    expr = " ".join(text)
    return Problem(idx, "arithmetic", f"Compute {expr}.", str(value), tuple(steps),
                   f"The question asks for the value of {expr}, worked from left to right.")


def world_word_problem(rng: random.Random, idx: str, *, world=None) -> Problem:
    """A word problem over TinyWeb's world, facts given in the question: city populations or founding gaps."""
    world = world or _default_world()
    cities = world.by_kind["city"]
    if rng.random() < 0.5:  # total population of 2-3 cities (thousands)
        picked = rng.sample(cities, rng.randint(2, 3))
        pops = [c.attrs["population_k"] for c in picked]
        facts = " ".join(f"{c.name} has {p} thousand people." for c, p in zip(picked, pops))
        names = ", ".join(c.name for c in picked[:-1]) + f" and {picked[-1].name}"
        steps, total = [], pops[0]
        for c, p in zip(picked[1:], pops[1:]):
            steps.append(Step(f"{total} + {p} = {total + p}", f"I add the {p} thousand people of {c.name}.",
                              f"Check: {total + p} - {p} = {total}, so the sum {total + p} is right."))
            total += p
        return Problem(idx, "world", f"{facts} How many thousand people live in {names} together?", str(total),
                       tuple(steps), f"I need the total population of {names}, in thousands.")
    a, b = rng.sample(cities, 2)
    fa, fb = a.attrs["founded"], b.attrs["founded"]
    while fa == fb:
        b = rng.choice(cities)
        fb = b.attrs["founded"]
    early, late = (a, b) if fa < fb else (b, a)
    y0, y1 = early.attrs["founded"], late.attrs["founded"]
    steps = (Step(f"{y0} < {y1}", f"{early.name} ({y0}) is the older city.",
                  f"Check: {y0} is smaller than {y1}, so {early.name} came first."),
             Step(f"{y1} - {y0} = {y1 - y0}", f"I subtract {y0} from {y1}.",
                  f"Check: {y0} + {y1 - y0} = {y1}, so the gap {y1 - y0} is right."))
    return Problem(idx, "world", f"{a.name} was founded in {fa}. {b.name} was founded in {fb}. How many years "
                   f"apart were the two cities founded?", str(y1 - y0), steps,
                   f"I need the number of years between the founding of {a.name} and of {b.name}.")


def ordering(rng: random.Random, idx: str, *, min_items: int = 3, max_items: int = 4, world=None) -> Problem:
    """`Sort these mountains from lowest to highest: ...`: repeated selection of the smallest remaining item."""
    world = world or _default_world()
    n = rng.randint(min_items, max_items)
    while True:
        items = rng.sample(world.by_kind["mountain"], n)
        heights = [m.attrs["height_m"] for m in items]
        if len(set(heights)) == n:
            break
    listed = ", ".join(f"{m.name} ({h} m)" for m, h in zip(items, heights))
    remaining = sorted(zip(heights, [m.name for m in items]))
    order, steps = [], []
    for k in range(n):
        h, name = remaining[k]
        rest = [f"{x[1]} ({x[0]} m)" for x in remaining[k + 1:]]
        claim = f"{name} {h}" if not rest else f"{name} {h} < " + ", ".join(str(x[0]) for x in remaining[k + 1:])
        lead = "Of the mountains left, I look for the lowest." if rest else f"Only {name} is left."
        check = (f"Check: {h} is below every other height left ({', '.join(rest)}), so {name} comes next."
                 if rest else f"Check: {name} ({h} m) is the highest of all, so it comes last.")
        steps.append(Step(claim, lead, check))
        order.append(name)
    return Problem(idx, "ordering", f"Sort these mountains from lowest to highest: {listed}.", ", ".join(order),
                   tuple(steps), f"I have to put {n} mountains in order of height, the lowest first.")


def subset_sum(rng: random.Random, idx: str, *, n_numbers: int = 6, max_number: int = 20, min_pick: int = 2,
               max_pick: int = 4) -> Problem:
    """`Which of these numbers sum to 18: 3, 9, 7, 5, 6, 2?`: `n_numbers` distinct numbers in [1, max_number];
    the target is the sum of `min_pick`..`max_pick` of them, and exactly one subset reaches it (redrawn until
    so), so accuracy is well defined. The answer is the chosen numbers, ascending."""
    if not 1 <= min_pick <= max_pick <= n_numbers <= max_number:
        raise ValueError(f"subset_sum: need 1 <= min_pick <= max_pick <= n_numbers <= max_number, got "
                         f"{min_pick}, {max_pick}, {n_numbers}, {max_number}")
    while True:
        numbers = rng.sample(range(1, max_number + 1), n_numbers)
        chosen = sorted(rng.sample(numbers, rng.randint(min_pick, max_pick)))
        target = sum(chosen)
        if subset_count(numbers, target) == 1:
            break
    listed = ", ".join(map(str, numbers))
    picked = ", ".join(map(str, chosen))
    step = Step(f"{'+'.join(map(str, chosen))}={target} found", f"I take {picked}.",
                f"Check: {' + '.join(map(str, chosen))} = {target}, the target.")
    return Problem(idx, "subset_sum", f"Which of these numbers sum to {target}: {listed}?", picked, (step,),
                   f"I need some of {listed} that add up to exactly {target}.")


def subset_count(numbers: Sequence[int], target: int) -> int:
    """How many subsets of the (positive) `numbers` sum to `target`, by dynamic programming over sums."""
    ways = [1] + [0] * target  # ways[s]: subsets of the numbers seen so far summing to s
    for x in numbers:
        for s in range(target, x - 1, -1):
            ways[s] += ways[s - x]
    return ways[target]


GENERATORS: dict[str, Callable[..., Problem]] = {
    "arithmetic": arithmetic, "world": world_word_problem, "ordering": ordering, "subset_sum": subset_sum,
}

_WORLD = None


def _default_world():
    """TinyWeb's world for seed 0, built once (the word problems name its cities and mountains)."""
    global _WORLD
    if _WORLD is None:
        from hytron.data.world import World

        _WORLD = World.generate(0)
    return _WORLD


def region(problem: Problem, buckets: int = 10) -> int:
    """A stable bucket in [0, buckets) from the question's text alone (case and spacing folded): a held-out
    region. Problems of one region never occur in a pool filtered to the other regions, whatever their seed,
    which disjoint seeds alone do not give a small task space (the same question comes up again)."""
    text = " ".join(problem.question.lower().split())
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % buckets


def generate_problems(kinds: str | Sequence[str], n: int, seed: int, **options) -> list[Problem]:
    """`n` problems cycling through `kinds`, deterministic in `seed`; `options[kind]` (a dict) go to that kind's
    generator, e.g. `generate_problems("arithmetic", 10, 0, arithmetic={"max_steps": 2})`."""
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [k for k in kinds if k not in GENERATORS]
    if unknown or not kinds:
        raise ValueError(f"unknown problem kind(s) {unknown or kinds}; known: {sorted(GENERATORS)}")
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        rng = random.Random(f"{kind}-{seed}-{i}")
        out.append(GENERATORS[kind](rng, f"{kind}-{seed}-{i}", **options.get(kind, {})))
    return out
