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
bias towards long wrong answers. No KL term (Dr.GRPO's choice). Checkpoints, exact resume, metrics and
the LR schedule are the pre-training loop's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hytron.config import ConfigError, save_resolved
from hytron.model import HybridLM
from hytron.train.loop import (
    StopRequested,
    clip_and_step,
    export_model,
    make_optimizer,
    resume,
    save_checkpoint,
    set_lr,
)
from hytron.train.metrics import MetricsLog, Progress
from hytron.train.recipe import TrainConfig
from hytron.train.sft import load_tokenizer


@dataclass
class RLSpec:
    kinds: list[str] = field(default_factory=lambda: ["arithmetic"])  # hytron.reasoning.tasks generators to draw
    # prompts from (read by hytron.reasoning.grpo, which builds the prompts for `grpo`)
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
class RLConfig(TrainConfig):
    """A training recipe for GRPO: `model.init_from` (an SFT'd model dir) is required; `data` is unused."""

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
        from hytron.infer import newline_ids

        self.model, self.tokenizer, self.max_slots = model, tokenizer, max_slots
        self.newline_ids = newline_ids((i, tokenizer.decode([i])) for i in range(tokenizer.vocab_size))

    def rollout(self, prompts: Sequence[RolloutPrompt], *, samples: int = 1, temperature: float = 0.0,
                top_p: float = 1.0, seed: int = 0, max_tokens: int = 512, max_thinking_tokens: int | None = None,
                thinking_grace: int | None = None) -> list[list[Rollout]]:
        """`samples` completions per prompt (each seeded by prompt and sample), one list per prompt."""
        from hytron.infer import SamplingParams, generate

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
            done = generate(self.model, ids, params, max_slots=self.max_slots, stop_ids=tok.stop_ids,
                            decode=tok.decode, think_start_id=tok.think_start_id, think_end_id=tok.think_end_id,
                            newline_ids=self.newline_ids)
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


def grpo(cfg: RLConfig, prompts_for_step: Callable[[int, object], list[RolloutPrompt]], *, progress: bool = True,
         max_steps_this_run: int | None = None) -> dict:
    """Run (or resume) GRPO as described by `cfg`; returns a summary with the final `model_dir`.

    `prompts_for_step(step, tokenizer)` gives the step's prompts (deterministic in `step`, so a resumed run
    rolls out the same ones); `hytron.reasoning.grpo` builds it from verifiable problem generators.
    """

    # ---- setup ---------------------------------------------------------------------------------------------
    if cfg.distributed != "none":
        raise ConfigError("distributed: hytron rl runs single-process (rollouts dominate; use one machine)")
    if not cfg.model.init_from:
        raise ConfigError("model.init_from: set it to the model directory to improve (e.g. an SFT run's model/)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else "cpu" if cfg.device == "auto" else cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out / "config.json")
    tokenizer = load_tokenizer(cfg)
    r = cfg.rl

    # ---- model and optimizer --------------------------------------------------------------------------------
    model = HybridLM.from_pretrained(cfg.model.init_from).to(device)
    o = cfg.optim
    optimizer = make_optimizer(model, o)
    roller = Roller(model, tokenizer, max_slots=r.prompts_per_step * r.group_size)

    # ---- resume -------------------------------------------------------------------------------------------
    start_step, _ = resume(out / "checkpoints", model, optimizer)
    metrics = MetricsLog(out / "metrics.jsonl", truncate_after=start_step)

    def save(step: int) -> dict:
        return save_checkpoint(out / "checkpoints", step, model, optimizer, {"config": cfg.to_dict()},
                               keep=cfg.keep_checkpoints)

    # ---- loop ---------------------------------------------------------------------------------------------------
    end_step = cfg.steps if max_steps_this_run is None else min(cfg.steps, start_step + max_steps_this_run)
    bar = Progress(total=cfg.steps, initial=start_step, enabled=progress, desc=cfg.name)
    step, status = start_step, "finished"
    with StopRequested() as stop:
        while step < end_step:
            t0 = time.perf_counter()
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
                adv = torch.tensor(advantages, device=device)[:, None]
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
            step += 1
            record["step_s"] = time.perf_counter() - t0
            if cfg.log_every and (step % cfg.log_every == 0 or step == 1):
                metrics.write(record)
            if "loss" in record and not math.isfinite(record["loss"]):
                raise FloatingPointError(f"loss became {record['loss']} at step {step}; lower optim.lr")
            bar.update(reward=record["reward"], acc=record["accuracy"], think=record["thinking_tokens"])
            if stop.signal is not None:
                save(step)
                status = f"interrupted by signal {stop.signal}; checkpoint saved at step {step}"
                break
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                save(step)
    bar.close()

    # ---- finish ---------------------------------------------------------------------------------------------
    summary = {"status": status, "step": step, "out_dir": str(out)}
    if step >= cfg.steps and status == "finished":
        summary["model_dir"] = str(export_model(model.config, save(step), tokenizer, out / "model"))
    elif status == "finished":
        save(step)
        summary["status"] = f"paused at step {step} of {cfg.steps}"
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

