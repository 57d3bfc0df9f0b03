"""Solve problems with a chat model through `hytron.infer`: thinking on/off, thinking budgets, sampled or greedy.

The prompt is the chat template's generation prompt (pre-filled `<think>\\n`, or `<think></think>` for
`/no_think`); the thinking budget is `hytron.infer`'s `max_thinking_tokens` (newline within the grace
window, else a forced `</think>`), the same code the server runs. Each answer is checked with
`tasks.check_answer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hytron.reasoning.data import prompt_messages
from hytron.reasoning.tasks import Problem, check_answer


@dataclass
class Attempt:
    """One generated solution of a problem."""

    problem: Problem
    prompt_ids: list[int]
    token_ids: list[int]  # generated ids: thinking, </think>, answer, <|im_end|>
    reasoning: str  # the thinking text ("" with thinking off)
    text: str  # the answer text
    thinking_tokens: int  # tokens inside <think>...</think> (the closing tag not counted)
    thinking_forced: bool  # the budget closed the thinking
    finish_reason: str
    correct: bool


class Solver:
    """A model + tokenizer ready to generate; reuse one for many calls (the newline-id table is built once)."""

    def __init__(self, model, tokenizer, max_slots: int = 32):
        from hytron.infer import newline_ids

        self.model, self.tokenizer, self.max_slots = model, tokenizer, max_slots
        self.newline_ids = newline_ids((i, tokenizer.decode([i])) for i in range(tokenizer.vocab_size))

    def prompt_ids(self, problem: Problem, thinking: bool) -> list[int]:
        ids, _ = self.tokenizer.render_chat(prompt_messages(problem, thinking), add_generation_prompt=True)
        return ids

    def solve(self, problems: Sequence[Problem], *, thinking: bool = True, max_thinking_tokens: int | None = None,
              samples: int = 1, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
              max_tokens: int = 512, thinking_grace: int | None = None) -> list[list[Attempt]]:
        """`samples` attempts per problem (seeded per problem and sample), as one list per problem."""
        from hytron.infer import SamplingParams, generate

        tok = self.tokenizer
        prompts, params, owners = [], [], []
        for pi, p in enumerate(problems):
            ids = self.prompt_ids(p, thinking)
            for s in range(samples):
                prompts.append(ids)
                params.append(SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                             seed=(seed * 1_000_003 + pi * 997 + s) % (2**62), thinking=thinking,
                                             max_thinking_tokens=max_thinking_tokens if thinking else None,
                                             thinking_grace=thinking_grace))
                owners.append(pi)
        was = self.model.training
        with torch.inference_mode():
            done = generate(self.model, prompts, params, max_slots=self.max_slots, stop_ids=tok.stop_ids,
                            decode=tok.decode, think_start_id=tok.think_start_id, think_end_id=tok.think_end_id,
                            newline_ids=self.newline_ids)
        self.model.train(was)
        out: list[list[Attempt]] = [[] for _ in problems]
        for pi, prompt, c in zip(owners, prompts, done):
            ids = list(c.token_ids)
            n_think = ids.index(tok.think_end_id) if tok.think_end_id in ids else (len(ids) if thinking else 0)
            out[pi].append(Attempt(problems[pi], prompt, ids, c.reasoning, c.text, n_think if thinking else 0,
                                   c.thinking_forced, c.finish_reason, check_answer(problems[pi], c.text)))
        return out


def load_solver(model_dir, max_slots: int = 32) -> Solver:
    """A Solver for a Nemotron-H model directory that carries its tokenizer."""
    from hytron.model import HybridLM
    from hytron.tokenizer import Tokenizer

    return Solver(HybridLM.from_pretrained(model_dir).eval(), Tokenizer.load(model_dir), max_slots=max_slots)
