"""Solve problems with a chat model: chat-template prompts, thinking on/off and budgets, answers checked.

The prompt is the chat template's generation prompt (pre-filled `<think>\\n`, or `<think></think>` for
`/no_think`); sampling and the thinking budget are `hytron.infer`'s (`max_thinking_tokens`: a newline
within the grace window, else a forced `</think>`), the code the server runs, driven through
`hytron.infer.rollout.Roller` so evaluation, self-distillation and GRPO roll out identically.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from hytron.infer.rollout import Roller, Rollout, RolloutPrompt
from hytron.reasoning.data import prompt_messages
from hytron.reasoning.tasks import Problem, check_answer


@dataclass
class Attempt(Rollout):
    """One generated solution of `problem` (a `Rollout`: ids, reasoning, answer text, thinking tokens, correct)."""

    problem: Problem


def problem_prompt(tokenizer, problem: Problem, thinking: bool = True) -> RolloutPrompt:
    """The generation prompt asking `problem`, with `check_answer` as its verifier."""
    ids, _ = tokenizer.render_chat(prompt_messages(problem, thinking), add_generation_prompt=True)
    return RolloutPrompt(ids, functools.partial(check_answer, problem), thinking)


class Solver:
    """A model + tokenizer ready to solve problems; reuse one for many calls."""

    def __init__(self, model, tokenizer, max_slots: int = 32):
        self.model, self.tokenizer = model, tokenizer
        self.roller = Roller(model, tokenizer, max_slots=max_slots)

    def prompt(self, problem: Problem, thinking: bool = True) -> RolloutPrompt:
        return problem_prompt(self.tokenizer, problem, thinking)

    def solve(self, problems: Sequence[Problem], *, thinking: bool = True, max_thinking_tokens: int | None = None,
              samples: int = 1, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
              max_tokens: int = 512, thinking_grace: int | None = None) -> list[list[Attempt]]:
        """`samples` attempts per problem (greedy by default), one list per problem."""
        groups = self.roller.rollout([self.prompt(p, thinking) for p in problems], samples=samples,
                                     temperature=temperature, top_p=top_p, seed=seed, max_tokens=max_tokens,
                                     max_thinking_tokens=max_thinking_tokens, thinking_grace=thinking_grace)
        return [[Attempt(**vars(r), problem=p) for r in group] for p, group in zip(problems, groups)]


def load_solver(model_dir, max_slots: int = 32) -> Solver:
    """A Solver for a Nemotron-H model directory that carries its tokenizer."""
    from hytron.model import HybridLM
    from hytron.tokenizer import Tokenizer

    return Solver(HybridLM.from_pretrained(model_dir).eval(), Tokenizer.load(model_dir), max_slots=max_slots)
