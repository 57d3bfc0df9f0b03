"""Rollouts: sample completions of chat prompts (thinking budgets included) and verify each one.

The one sampler that reasoning evaluation, self-distillation and GRPO share, so they roll out identically;
the engine and the budget are those the server runs. `tokenizer` is any object with `decode`, `vocab_size`,
`stop_ids`, `think_start_id` and `think_end_id` (hytron's `Tokenizer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hytron.infer.engine import generate, tokenizer_settings
from hytron.infer.sampling import SamplingParams


@dataclass
class RolloutPrompt:
    """One prompt to roll out: its ids, whether generation starts inside `<think>`, and the verifier."""

    prompt_ids: list[int]
    is_correct: Callable[[str], bool]  # answer text (after </think>) -> correct?
    thinking: bool = True


@dataclass
class Rollout:
    """One sampled completion."""

    prompt_ids: list[int]
    token_ids: list[int]  # generated ids: thinking, </think>, answer, end of turn
    reasoning: str
    text: str  # the answer
    thinking_tokens: int  # inside <think>...</think>, the closing tag not counted
    thinking_forced: bool  # the budget, not the model, closed the thinking
    finish_reason: str
    correct: bool


class Roller:
    """Samples completions with `hytron.infer` (thinking budgets included) and verifies them."""

    def __init__(self, model, tokenizer, max_slots: int = 32):
        self.model, self.tokenizer, self.max_slots = model, tokenizer, max_slots
        self.settings = tokenizer_settings(tokenizer, decode=tokenizer.decode)  # as `hytron serve`'s engine

    def rollout(self, prompts: Sequence[RolloutPrompt], *, samples: int = 1, temperature: float = 0.0,
                top_p: float = 1.0, seed: int = 0, max_tokens: int = 512, max_thinking_tokens: int | None = None,
                thinking_grace: int | None = None) -> list[list[Rollout]]:
        """`samples` completions per prompt (each seeded by prompt and sample), one list per prompt."""
        tok = self.tokenizer
        ids, params, owners = [], [], []
        for pi, p in enumerate(prompts):
            for s in range(samples):
                ids.append(p.prompt_ids)
                params.append(SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                             seed=(seed * 1_000_003 + pi * 997 + s) % (2**62), thinking=p.thinking,
                                             max_thinking_tokens=max_thinking_tokens if p.thinking else None,
                                             thinking_grace=thinking_grace))
                owners.append(pi)
        was = self.model.training
        with torch.inference_mode():
            done = generate(self.model, ids, params, max_slots=self.max_slots, **self.settings)
        self.model.train(was)
        out: list[list[Rollout]] = [[] for _ in prompts]
        for pi, c in zip(owners, done):
            p, gen = prompts[pi], list(c.token_ids)
            n_think = 0
            if p.thinking:
                n_think = gen.index(tok.think_end_id) if tok.think_end_id in gen else len(gen)
            out[pi].append(Rollout(p.prompt_ids, gen, c.reasoning, c.text, n_think, c.thinking_forced,
                                   c.finish_reason, p.is_correct(c.text)))
        return out
