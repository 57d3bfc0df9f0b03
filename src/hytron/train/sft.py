"""Chat SFT, top to bottom: loss only on assistant tokens, built from the pre-training loop's pieces.

`sft(config)` trains a model (a preset, or `model.init_from` a Nemotron-H directory) on chat JSONL rows:
`{"messages": [{role, content[, reasoning_content]}, ...], "reasoning": "on" | "off"}` (the per-row switch
of Nemotron's post-training data; `off` drops the reasoning so the turn trains the empty `<think></think>`
that `/no_think` pre-fills). Rows are rendered by the
tokenizer's chat template; the loss mask is the template's assistant mask (assistant content and its
`<|im_end|>`, nothing of the system/user turns or role headers), averaged over the step's assistant tokens.
Checkpoints, exact resume, metrics JSONL, LR schedule, precision and DDP wrapping are those of
`hytron.train.pretrain` / `checkpoint` / `distributed` / `metrics` / `schedule`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from hytron.config import ConfigError, save_resolved
from hytron.train import distributed as dist
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
from hytron.train.pretrain import apply_precision, autocast_dtype, build_model
from hytron.train.recipe import TrainConfig, load_recipe


@dataclass
class SFTDataSpec:
    path: str = ""  # chat JSONL (hytron reasoning-data, or your own rows)
    seq_len: int = 512  # rows longer than this are dropped (and counted)
    batch_size: int = 16  # rows per micro-batch per rank
    grad_accum: int = 1
    val_rows: int = 64  # rows held out (seeded) for the masked validation loss

    def __post_init__(self):
        for f in ("seq_len", "batch_size", "grad_accum"):
            if getattr(self, f) < 1:
                raise ConfigError(f"data.{f}: must be >= 1, got {getattr(self, f)}")
        if self.val_rows < 0:
            raise ConfigError(f"data.val_rows: must be >= 0, got {self.val_rows}")


@dataclass
class SFTConfig(TrainConfig):
    """A training recipe (`TrainConfig`) whose data is chat JSONL; `tokenizer` defaults to the init model's."""

    tokenizer: str = ""
    data: SFTDataSpec = field(default_factory=SFTDataSpec)


def load_sft_recipe(name_or_path: str, overrides: list[str] | None = None, section: str | None = None,
                    cls: type = SFTConfig):
    """Load an SFT (or RL: `cls`) recipe with `key.sub=value` overrides, like `train.recipe.load_recipe`."""
    return load_recipe(name_or_path, overrides, section=section, cls=cls)


def load_tokenizer(cfg) -> object:
    from hytron.tokenizer import Tokenizer

    where = cfg.tokenizer or cfg.model.init_from
    if not where:
        raise ConfigError("tokenizer: set it to a tokenizer directory (or set model.init_from to a model with one)")
    return Tokenizer.load(where)


# ---- chat rows (JSONL) ------------------------------------------------------------------------------------
def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_chat_jsonl(path: str | Path) -> list[dict]:
    """Chat rows from a JSONL file, each checked: `messages` (role/content strings, an assistant turn) and an
    optional `reasoning` of "on"/"off" (or true/false)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data file not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
        try:
            rows.append(normalise_row(row))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def normalise_row(row: dict) -> dict:
    """The row with `reasoning` as "on"/"off" (inferred from the last assistant turn when absent)."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise ValueError("a row needs a non-empty 'messages' list")
    for i, m in enumerate(row["messages"]):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not (
                isinstance(m.get("content"), str) or (m.get("content") is None and m.get("tool_calls"))):
            raise ValueError(f"messages[{i}] needs string 'role' and 'content' (content may be null with tool_calls)")
    if not any(m["role"] == "assistant" for m in row["messages"]):
        raise ValueError("a row needs at least one assistant message to train on")
    flag = row.get("reasoning")
    if flag is None:
        last = [m for m in row["messages"] if m["role"] == "assistant"][-1]
        flag = "on" if (last.get("reasoning_content") or "</think>" in (last.get("content") or "")) else "off"
    elif isinstance(flag, bool):
        flag = "on" if flag else "off"
    if flag not in ("on", "off"):
        raise ValueError(f"'reasoning' must be \"on\" or \"off\" (or true/false), got {row.get('reasoning')!r}")
    return {**row, "reasoning": flag}


def encode_row(tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of a row through the chat template; mask 1 exactly on assistant tokens. A reasoning-off
    row has its reasoning removed, so its assistant turns render as `<think></think>ANSWER<|im_end|>`."""
    row = normalise_row(row)
    messages = row["messages"]
    if row["reasoning"] == "off":
        messages = [_without_reasoning(m) if m["role"] == "assistant" else m for m in messages]
    return tokenizer.render_chat(messages, enable_thinking=row["reasoning"] == "on", tools=row.get("tools"))


def _without_reasoning(message: dict) -> dict:
    content = message.get("content") or ""
    if "</think>" in content:
        content = content.split("</think>")[-1].strip()
    return {k: v for k, v in message.items() if k != "reasoning_content"} | {"content": content}


class ChatBatches:
    """Encoded rows in seeded shuffled order, one epoch after another; resumable via state_dict.

    A batch is right-padded to its longest row: (inputs (B, L-1), targets (B, L-1), loss_mask (B, L-1)).
    Rows are never packed together, so no Mamba state or attention crosses from one conversation to the next.
    """

    def __init__(self, examples: list[tuple[list[int], list[int]]], batch_size: int, seed: int, pad_id: int,
                 rank: int = 0, world_size: int = 1):
        self.examples = examples[rank::world_size]
        if len(self.examples) < 1:
            raise ValueError("no SFT rows left for this rank (fewer rows than processes?)")
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.examples), generator=g).tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation()

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        picked = []
        while len(picked) < self.batch_size:
            if self.pos >= len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._permutation()
            picked.append(self.examples[self._order[self.pos]])
            self.pos += 1
        return collate(picked, self.pad_id)


def collate(examples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (inputs, targets, loss_mask), each (B, L-1); mask[t] says whether targets[t] is trained."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, (x, m) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]


def masked_loss_sum(model, inputs, targets, mask, amp=None) -> torch.Tensor:
    """Sum of cross-entropy over masked target positions (divide by the step's mask count)."""
    with torch.autocast(inputs.device.type, dtype=amp, enabled=amp is not None):
        logits = model(inputs)  # (B, L, V)
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return (losses * mask.flatten()).sum()


def encode_rows(tokenizer, rows: list[dict], seq_len: int) -> tuple[list, int]:
    """(examples, dropped): encoded rows that fit in `seq_len` and train on at least one token."""
    examples, dropped = [], 0
    for row in rows:
        ids, mask = encode_row(tokenizer, row)
        if len(ids) > seq_len or not any(mask[1:]):
            dropped += 1
            continue
        examples.append((ids, mask))
    return examples, dropped


@torch.no_grad()
def evaluate_masked(model, examples, batch_size: int, pad_id: int, device, amp=None) -> dict:
    """Mean assistant-token loss over `examples`."""
    if not examples:
        return {}
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        x, y, m = (t.to(device) for t in collate(examples[i:i + batch_size], pad_id))
        total += float(masked_loss_sum(model, x, y, m, amp))
        count += int(m.sum())
    model.train(was)
    return {"val_loss": total / max(1, count), "val_tokens": count}


def sft(cfg: SFTConfig, *, progress: bool = True, max_steps_this_run: int | None = None) -> dict:
    """Fine-tune (or resume) the run described by `cfg`; returns a summary (see the module docstring)."""
    # ---- setup ---------------------------------------------------------------------------------------------
    info = dist.setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    if not cfg.data.path:
        raise ConfigError("data.path: set it to a chat JSONL file (hytron reasoning-data --out FILE)")
    tokenizer = load_tokenizer(cfg)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out / "config.json")

    # ---- model and precision ----------------------------------------------------------------------------
    model = build_model(cfg, tokenizer.vocab_size).to(info.device)
    recipe = apply_precision(model, cfg.precision)
    amp = autocast_dtype(cfg.precision, info.device)
    wrapped = dist.wrap(model, cfg.distributed, info)

    # ---- optimizer ----------------------------------------------------------------------------------------
    o = cfg.optim
    optimizer = make_optimizer(model, o)

    # ---- data ------------------------------------------------------------------------------------------------
    rows = read_chat_jsonl(cfg.data.path)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_val = min(cfg.data.val_rows, len(rows) // 10)
    val_rows, train_rows = [rows[i] for i in order[:n_val]], [rows[i] for i in order[n_val:]]
    train_examples, dropped = encode_rows(tokenizer, train_rows, cfg.data.seq_len)
    val_examples, _ = encode_rows(tokenizer, val_rows, cfg.data.seq_len)
    if not train_examples:
        raise ValueError(f"data.path {cfg.data.path}: no row fits data.seq_len={cfg.data.seq_len} tokens")
    batches = ChatBatches(train_examples, cfg.data.batch_size * cfg.data.grad_accum, cfg.seed, tokenizer.pad_id,
                          rank=info.rank, world_size=info.world_size)

    # ---- resume -------------------------------------------------------------------------------------------
    start_step, _ = resume(out / "checkpoints", model, optimizer, batches)
    metrics = MetricsLog(out / "metrics.jsonl", enabled=info.is_main, truncate_after=start_step)
    if info.is_main and start_step == 0:
        metrics.write({"step": 0, "train_rows": len(train_examples), "val_rows": len(val_examples),
                       "dropped_too_long": dropped})

    def save(step: int) -> dict:
        return save_checkpoint(out / "checkpoints", step, model, optimizer,
                               {"loader": batches.state_dict(), "config": cfg.to_dict()}, keep=cfg.keep_checkpoints)

    # ---- loop ---------------------------------------------------------------------------------------------------
    wrapped.train()
    end_step = cfg.steps if max_steps_this_run is None else min(cfg.steps, start_step + max_steps_this_run)
    bar = Progress(total=cfg.steps, initial=start_step, enabled=progress and info.is_main, desc=cfg.name)
    step, status, last_eval = start_step, "finished", {}
    with StopRequested() as stop:
        while step < end_step:
            t0 = time.perf_counter()
            lr = set_lr(optimizer, step, cfg.steps, o)
            if recipe is not None and recipe.should_switch(step, cfg.steps):
                from hytron.lowp import set_high_precision

                set_high_precision(model, True, passes=recipe.high_precision_passes)
            inputs, targets, mask = next(batches)
            n_tokens = dist.all_reduce_sum(mask.sum().double().to(info.device)).clamp(min=1)
            loss_sum = torch.zeros((), dtype=torch.float64)
            micro = cfg.data.batch_size
            for i in range(cfg.data.grad_accum):
                x, y, m = (t[i * micro:(i + 1) * micro].to(info.device) for t in (inputs, targets, mask))
                with dist.no_grad_sync(wrapped, skip=i < cfg.data.grad_accum - 1):
                    part = masked_loss_sum(wrapped, x, y, m, amp)
                    # every rank divides by the global token count; DDP averages gradients over ranks
                    (part * info.world_size / n_tokens).backward()
                loss_sum += part.detach().double().cpu()
            grad_norm = clip_and_step(model, optimizer, o.grad_clip)
            step += 1
            loss_value = float(dist.all_reduce_sum(loss_sum.to(info.device)) / n_tokens)
            dt = time.perf_counter() - t0
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                      "assistant_tokens": int(n_tokens), "step_s": dt}
            if cfg.log_every and (step % cfg.log_every == 0 or step == 1):
                metrics.write(record)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}; lower optim.lr "
                                         f"(last good checkpoint: {out / 'checkpoints'})")
            bar.update(loss=loss_value, lr=lr)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and info.is_main:
                last_eval = evaluate_masked(model, val_examples, cfg.data.batch_size, tokenizer.pad_id,
                                            info.device, amp)
                metrics.write({"step": step, **last_eval})
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
        if info.is_main:
            last_eval = evaluate_masked(model, val_examples, cfg.data.batch_size, tokenizer.pad_id, info.device, amp)
            metrics.write({"step": step, **last_eval})
        model_sd = save(step)
        if info.is_main:
            summary["model_dir"] = str(export_model(model.config, model_sd, tokenizer, out / "model"))
    elif status == "finished":
        save(step)
        summary["status"] = f"paused at step {step} of {cfg.steps}"
    summary.update(last_eval)
    if info.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    dist.teardown()
    return summary
