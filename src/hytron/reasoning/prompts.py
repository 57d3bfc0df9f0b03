"""Prompts on verifiable problems for RL: the per-step prompts `hytron.train.rl.grpo` rolls out (`hytron rl`).

    from hytron.reasoning.prompts import problem_prompts
    grpo(cfg, problem_prompts(cfg))          # cfg: hytron.train.rl.RLConfig

Step `s` draws `rl.prompts_per_step` problems of `rl.kinds` from seed `seed * 1000 + 7 + s` (so a resumed
run rolls out the same problems, and none come from the SFT or evaluation seeds' streams); the first
`round(no_think_share * n)` of them are asked with `/no_think`. The verifier is `tasks.check_answer`.
"""

from __future__ import annotations

from hytron.infer.rollout import RolloutPrompt
from hytron.reasoning.generation import problem_prompt
from hytron.reasoning.tasks import generate_problems


def problem_prompts(cfg):
    """`prompts_for_step(step, tokenizer)` for `grpo` (an RL config `cfg`): seeded verifiable problems, some
    with /no_think."""
    r = cfg.rl

    def prompts_for_step(step: int, tokenizer) -> list[RolloutPrompt]:
        problems = generate_problems(r.kinds, r.prompts_per_step, seed=cfg.seed * 1_000 + 7 + step)
        n_off = round(r.no_think_share * len(problems))
        return [problem_prompt(tokenizer, p, thinking=i >= n_off) for i, p in enumerate(problems)]

    return prompts_for_step
