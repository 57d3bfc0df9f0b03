"""GRPO with verifiable rewards, top to bottom: Dr.GRPO normalisation and a length penalty on correct answers only.

Each step takes `prompts_per_step` prompts from the caller (verifiable problems, seeded by step, so a
resumed run sees the same ones), samples `group_size` completions each through `hytron.infer` (the
thinking budget applies when set), and scores them with the prompt's verifier:

    reward = 0                                   if the answer is wrong (or missing)
    reward = 1 - length_penalty * sigmoid(z)     if correct; z = (thinking tokens - mean) / std over the
                                                 group's *correct* completions (Arora & Zanette 2025)

so length only ever separates correct answers and never makes a wrong answer look better than a right one.
Advantages are Dr.GRPO's (Liu et al. 2025, research/reasoning-and-fullstack.md §A2): reward minus the
group mean, no division by the group's std; the token-level PPO-clip objective is summed over tokens and
divided by a constant (completions x max_tokens), not by each completion's length, which removes GRPO's
bias towards long wrong answers. No KL term (Dr.GRPO's choice). Rollouts are `hytron.infer.rollout`'s;
setup and run bookkeeping (exact resume, metrics, save on signal, summary) are `hytron.train`'s shared pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hytron.config import ConfigError
from hytron.infer.rollout import Roller, RolloutPrompt
from hytron.train.loop import Run, clip_and_step, export_model, make_optimizer, set_lr
from hytron.train.recipe import RunConfig
from hytron.train.setup import build_model, load_tokenizer, start


@dataclass
class RLSpec:
    kinds: list[str] = field(default_factory=lambda: ["arithmetic"])  # hytron.reasoning.tasks generators to draw
    # prompts from (read by hytron.reasoning.prompts, which builds the prompts for `grpo`)
    prompts_per_step: int = 8
    group_size: int = 8  # completions per prompt
    temperature: float = 1.0
    max_tokens: int = 256  # per completion, thinking included
    max_thinking_tokens: int | None = None  # a thinking budget during rollouts (None: unbounded)
    length_penalty: float = 0.5  # alpha: a correct answer's reward ranges over [1 - alpha, 1]
    clip_eps: float = 0.2
    updates_per_batch: int = 1  # PPO epochs over each batch of rollouts (1 = on-policy)
    no_think_share: float = 0.0  # share of prompts rolled out with /no_think (Nano 2 RL uses both modes)

    def __post_init__(self):
        for f in ("prompts_per_step", "group_size", "max_tokens", "updates_per_batch"):
            if getattr(self, f) < 1:
                raise ConfigError(f"rl.{f}: must be >= 1, got {getattr(self, f)}")
        if self.group_size < 2:
            raise ConfigError(f"rl.group_size: GRPO compares completions within a group, needs >= 2, got "
                              f"{self.group_size}")
        if not 0 <= self.length_penalty <= 1:
            raise ConfigError(f"rl.length_penalty: must be in [0, 1], got {self.length_penalty}")
        if self.temperature <= 0:
            raise ConfigError(f"rl.temperature: rollouts must sample, needs > 0, got {self.temperature}")
        if not 0 <= self.no_think_share <= 1:
            raise ConfigError(f"rl.no_think_share: must be in [0, 1], got {self.no_think_share}")


@dataclass
class RLConfig(RunConfig):
    """A GRPO run (`RunConfig`): `model.init_from` (an SFT'd model dir) is required; prompts come from the caller.
    Single process, full precision: rollouts dominate the time, and they decode in the model's own dtype."""

    tokenizer: str = ""
    rl: RLSpec = field(default_factory=RLSpec)


def group_rewards(correct: list[bool], lengths: list[int], length_penalty: float) -> list[float]:
    """Rewards of one group: 0 if wrong; 1 - alpha * sigmoid(z) if correct, z the length's z-score among the
    correct ones (0 when fewer than two are correct or all have the same length)."""
    good = [n for n, c in zip(lengths, correct) if c]
    mean = sum(good) / len(good) if good else 0.0
    std = math.sqrt(sum((n - mean) ** 2 for n in good) / len(good)) if good else 0.0
    out = []
    for n, c in zip(lengths, correct):
        z = (n - mean) / std if std > 0 else 0.0
        out.append(1.0 - length_penalty * (1 / (1 + math.exp(-z))) if c else 0.0)
    return out


def dr_grpo_advantages(rewards: list[float]) -> list[float]:
    """Dr.GRPO: reward minus the group mean (no std normalisation)."""
    mean = sum(rewards) / len(rewards)
    return [r - mean for r in rewards]


def token_logprobs(model, sequences: list[list[int]], starts: list[int], temperature: float, pad_id: int):
    """(logprobs (B, L-1), mask (B, L-1)): log-probabilities of each sequence's tokens from `starts[i]` on
    (the completion), under the model at `temperature`; mask is 1 on completion tokens."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for i, (s, a) in enumerate(zip(sequences, starts)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, a:len(s)] = True
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    logits = model(ids[:, :-1]).float() / temperature  # (B, L-1, V)
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    return lp, mask[:, 1:]


def grpo(cfg: RLConfig, prompts_for_step: Callable[[int, object], list[RolloutPrompt]], *, progress: bool = True,
         max_steps_this_run: int | None = None) -> dict:
    """Run (or resume) GRPO as described by `cfg`; returns a summary with the final `model_dir`.

    `prompts_for_step(step, tokenizer)` gives the step's prompts (deterministic in `step`, so a resumed run
    rolls out the same ones); `hytron.reasoning.prompts` builds it from verifiable problem generators.
    """

    # ---- setup, model, optimizer -------------------------------------------------------------------------
    if not cfg.model.init_from:
        raise ConfigError("model.init_from: set it to the model directory to improve (e.g. an SFT run's model/)")
    info = start(cfg)
    if info.enabled:
        raise ConfigError("hytron rl runs single-process (rollouts dominate; use one machine, not torchrun)")
    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, tokenizer.vocab_size).to(info.device)
    r, o = cfg.rl, cfg.optim
    optimizer = make_optimizer(model, o)
    roller = Roller(model, tokenizer, max_slots=r.prompts_per_step * r.group_size)

    # ---- loop -------------------------------------------------------------------------------------------------
    run = Run(cfg, model, optimizer)
    for step in run.steps(progress, max_steps_this_run):
        lr = set_lr(optimizer, step, cfg.steps, o)
        # rollouts: this step's prompts, a group of samples each
        groups = roller.rollout(prompts_for_step(step, tokenizer), samples=r.group_size,
                                temperature=r.temperature, seed=cfg.seed * 1_000_003 + step,
                                max_tokens=r.max_tokens, max_thinking_tokens=r.max_thinking_tokens)
        sequences, starts, advantages, rewards_all, forced_at = [], [], [], [], []
        for attempts in groups:
            ok = [a.correct and a.finish_reason == "stop" for a in attempts]
            rewards = group_rewards(ok, [a.thinking_tokens for a in attempts], r.length_penalty)
            rewards_all += rewards
            for a, adv in zip(attempts, dr_grpo_advantages(rewards)):
                if adv != 0.0:  # a group where all rewards tie teaches nothing
                    sequences.append(a.prompt_ids + a.token_ids)
                    starts.append(len(a.prompt_ids))
                    advantages.append(adv)
                    # a budget-forced </think> was not sampled by the policy: no gradient through it
                    forced_at.append(len(a.prompt_ids) + a.thinking_tokens - 1 if a.thinking_forced else None)
        flat = [a for g in groups for a in g]
        record = {"step": step + 1, "lr": lr, "reward": sum(rewards_all) / len(rewards_all),
                  "accuracy": sum(a.correct for a in flat) / len(flat),
                  "thinking_tokens": sum(a.thinking_tokens for a in flat) / len(flat),
                  "trained_completions": len(sequences)}
        if sequences:
            model.train()
            adv = torch.tensor(advantages, device=info.device)[:, None]
            with torch.no_grad():
                old_lp, mask = token_logprobs(model, sequences, starts, r.temperature, tokenizer.pad_id)
            for i, pos in enumerate(forced_at):
                if pos is not None:
                    mask[i, pos] = False
            norm = len(flat) * r.max_tokens  # Dr.GRPO: a constant, not each completion's length
            for _ in range(r.updates_per_batch):
                lp, _ = token_logprobs(model, sequences, starts, r.temperature, tokenizer.pad_id)
                ratio = torch.exp(lp - old_lp)
                surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - r.clip_eps, 1 + r.clip_eps) * adv)
                loss = -(surrogate * mask).sum() / norm
                loss.backward()
                grad_norm = clip_and_step(model, optimizer, o.grad_clip)
            record.update(loss=float(loss.detach()), grad_norm=grad_norm)
        run.log(record, reward=record["reward"], acc=record["accuracy"], think=record["thinking_tokens"])

    # ---- finish -------------------------------------------------------------------------------------------
    return run.finish(export=lambda state: export_model(model.config, state, tokenizer, run.out / "model"))
