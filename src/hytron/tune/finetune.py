"""The fine-tuning loop for an in-memory model (full, LoRA or distilled from a teacher), top to bottom.

`finetune(model, batches, cfg)` trains whatever parameters of `model` require grad (all of them, or only
LoRA adapters after `apply_lora`) on batches of (inputs, targets, loss_mask): packed pre-training text
(`packed_batches`, every position counts) or chat examples (`chat_batches`, assistant tokens only). With a
`teacher` the loss is `distill_loss` (forward KL on the teacher's top-k logits), else cross-entropy.
Runs are short (minutes on a CPU) and not resumable; `hytron pretrain`/`hytron sft` own long runs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hytron.config import ConfigError
from hytron.tune.distill import distill_loss, teacher_topk, topk_kl

Batch = tuple[Tensor, Tensor, Tensor]  # inputs (B, L), targets (B, L), loss_mask (B, L) bool


@dataclass
class TuneConfig:
    steps: int = 100
    lr: float = 1e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # cosine decay to lr · min_lr_ratio
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    batch_size: int = 8
    seq_len: int = 128
    log_every: int = 10
    eval_every: int = 0  # 0: only before and after
    # distillation (used when a teacher is given)
    kd_topk: int = 64
    kd_temperature: float = 1.0
    kd_alpha: float = 1.0  # share of the KD loss; the rest is cross-entropy on the data

    def __post_init__(self):
        for f in ("steps", "batch_size", "seq_len", "kd_topk"):
            if getattr(self, f) < 1:
                raise ConfigError(f"{f}: must be >= 1, got {getattr(self, f)}")
        if self.lr <= 0 or self.kd_temperature <= 0:
            raise ConfigError(f"lr and kd_temperature must be positive, got {self.lr}, {self.kd_temperature}")
        if not 0 <= self.kd_alpha <= 1:
            raise ConfigError(f"kd_alpha: must be in [0, 1], got {self.kd_alpha}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")


# ---- data -------------------------------------------------------------------------------------------------
def packed_batches(data_dir: str | Path, seq_len: int, batch_size: int, seed: int = 0,
                   weights: dict[str, float] | None = None) -> Iterator[Batch]:
    """Endless training batches from a packed-data directory (`hytron tokenize`), blend weights applied."""
    from hytron.packing import PackedLoader

    loader = PackedLoader(data_dir, seq_len, batch_size, seed=seed, weights=weights)
    for x, y in loader:
        yield x, y, torch.ones_like(y, dtype=torch.bool)


def packed_eval_batches(data_dir: str | Path, seq_len: int, batch_size: int, max_batches: int = 8,
                        component: str | None = None) -> list[Batch]:
    """The validation split's first `max_batches` batches (fixed, so before/after numbers compare), of every
    component or of one (e.g. the user's own documents vs the general replay data, to measure forgetting)."""
    from hytron.packing import PackedData, iter_eval_batches

    if component is None:
        return [(x, y, torch.ones_like(y, dtype=torch.bool))
                for x, y in iter_eval_batches(data_dir, seq_len, batch_size, max_batches=max_batches)]
    tokens = torch.from_numpy(PackedData(data_dir).tokens("val", component))
    n = min((tokens.numel() - 1) // seq_len, max_batches * batch_size)
    if n < 1:
        raise ValueError(f"{data_dir}: component {component!r} has fewer than {seq_len + 1} validation tokens")
    windows = tokens[:n * seq_len + 1]
    x, y = windows[:-1].view(n, seq_len), windows[1:].view(n, seq_len)
    return [(x[i:i + batch_size], y[i:i + batch_size], torch.ones_like(y[i:i + batch_size], dtype=torch.bool))
            for i in range(0, n, batch_size)]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    """Right-padded (inputs, targets, mask), each (B, L-1); mask[t] says whether targets[t] is trained."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, (x, m) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]


def chat_batches(examples: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int,
                 seed: int = 0) -> Iterator[Batch]:
    """Endless shuffled batches of encoded chat examples (ids, assistant_mask), one epoch after another."""
    if not examples:
        raise ValueError("chat_batches: no examples")
    g = torch.Generator().manual_seed(seed)
    picked: list = []
    while True:
        for j in torch.randperm(len(examples), generator=g).tolist():
            picked.append(examples[j])
            if len(picked) == batch_size:
                yield collate(picked, pad_id)
                picked = []


# ---- evaluation -----------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], teacher: nn.Module | None = None, k: int = 64,
             temperature: float = 1.0) -> dict:
    """Masked cross-entropy (nats/token) and, with a teacher, the top-k KL to it, over fixed batches."""
    was = model.training
    model.eval()
    ce_sum, kl_sum, count = 0.0, 0.0, 0
    for x, y, m in batches:
        logits = model(x)
        ce_sum += float((F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
                         * m.flatten()).sum())
        if teacher is not None:
            values, indices = teacher_topk(teacher(x), k)
            kl_sum += float(topk_kl(logits, values, indices, temperature, m, reduction="sum"))
        count += int(m.sum())
    model.train(was)
    out = {"val_loss": ce_sum / max(1, count), "val_tokens": count}
    if teacher is not None:
        out["kl_to_teacher"] = kl_sum / max(1, count)
    return out


def _lr_lambda(cfg: TuneConfig):
    def factor(step: int) -> float:  # linear warmup, then cosine to min_lr_ratio
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + 0.5 * (1 - cfg.min_lr_ratio) * (1 + math.cos(math.pi * t))
    return factor


# ---- the loop -------------------------------------------------------------------------------------------------
def finetune(model: nn.Module, batches: Iterator[Batch], cfg: TuneConfig, *, teacher: nn.Module | None = None,
             eval_batches: list[Batch] | None = None, metrics_path: str | Path | None = None,
             progress: bool = True) -> dict:
    """Train `model`'s trainable parameters for `cfg.steps`; returns {before, after, steps, seconds, ...}."""
    # ---- setup -------------------------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("finetune: the model has no trainable parameters")
    if teacher is not None:
        tv, sv = teacher.lm_head.out_features, model.lm_head.out_features
        if tv != sv:
            raise ValueError(f"distillation needs one vocabulary: teacher has {tv} ids, student {sv}")
        teacher.eval().requires_grad_(False)
    log = open(metrics_path, "w") if metrics_path else None  # noqa: SIM115 - closed below
    n_trainable, n_total = sum(p.numel() for p in params), sum(p.numel() for p in model.parameters())

    def write(record: dict) -> None:
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()

    def eval_now() -> dict:
        if not eval_batches:
            return {}
        return evaluate(model, eval_batches, teacher, cfg.kd_topk, cfg.kd_temperature)

    # ---- optimizer ------------------------------------------------------------------------------------------
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))

    # ---- loop -------------------------------------------------------------------------------------------------
    before = eval_now()
    write({"step": 0, **before})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="distill" if teacher is not None else "finetune", leave=False)
    model.train()
    t_start = time.perf_counter()
    record: dict = {}
    for step in range(1, cfg.steps + 1):
        x, y, m = next(batches)
        logits = model(x)
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(x)
            loss, parts = distill_loss(logits, t_logits, y, m, k=cfg.kd_topk, temperature=cfg.kd_temperature,
                                       alpha=cfg.kd_alpha)
        else:
            loss = (F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
                    * m.flatten()).sum() / m.sum().clamp(min=1)
            parts = {}
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else torch.zeros(())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = schedule.get_last_lr()[0]
        schedule.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}; lower the learning rate")
        record = {"step": step, "loss": value, "lr": lr, "grad_norm": float(grad_norm), **parts}
        if cfg.log_every and (step % cfg.log_every == 0 or step == 1):
            write(record)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            write({"step": step, **eval_now()})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
    if bar is not None:
        bar.close()
    model.eval()
    after = eval_now()
    write({"step": cfg.steps, **after})
    if log is not None:
        log.close()
    return {"steps": cfg.steps, "seconds": round(time.perf_counter() - t_start, 2), "final_loss": record.get("loss"),
            "trainable_params": n_trainable, "total_params": n_total, "before": before, "after": after}
