"""The tuning loop for an in-memory model (full fine-tune, LoRA, or distillation from a teacher), top to bottom.

`finetune(model, batches, cfg)` trains whatever parameters of `model` require grad (all of them, or only
LoRA adapters after `apply_lora`) on batches of (inputs, targets, loss_mask): packed pre-training text
(`packed_batches`, every position counts) or chat examples (`chat_batches`, assistant tokens only). With a
`teacher` the loss is `distill_loss` (forward KL on the teacher's top-k logits), else cross-entropy.
Run bookkeeping is `hytron.train.loop.Run`'s: checkpoints in `cfg.out_dir`, so a stopped run started again
with the same model, data and config resumes exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hytron.config import ConfigError, save_resolved
from hytron.train.batches import ChatBatches
from hytron.train.loop import Run, clip_and_step, make_optimizer, set_lr
from hytron.train.recipe import OptimSpec
from hytron.tune.distill import distill_loss, teacher_topk, topk_kl

Batch = tuple[Tensor, Tensor, Tensor]  # inputs (B, L), targets (B, L), loss_mask (B, L) bool


@dataclass
class TuneConfig:
    name: str = "tune"
    out_dir: str = "runs/tune"  # checkpoints, metrics.jsonl, summary.json
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
    checkpoint_every: int = 50  # 0: only at the end (and on SIGINT/SIGTERM)
    keep_checkpoints: int = 1
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

    @property
    def optim(self) -> OptimSpec:
        """The shared optimizer settings: AdamW, linear warmup, cosine decay to lr · min_lr_ratio."""
        return OptimSpec(lr=self.lr, min_lr_ratio=self.min_lr_ratio, weight_decay=self.weight_decay,
                         grad_clip=self.grad_clip, schedule="cosine", warmup_steps=self.warmup_steps)


# ---- data -------------------------------------------------------------------------------------------------
class packed_batches:  # noqa: N801 - used like the function it replaced
    """Endless training batches from a packed-data directory (`hytron tokenize`), blend weights applied, every
    position trained; resumable (`state_dict`) like the loader underneath."""

    def __init__(self, data_dir: str | Path, seq_len: int, batch_size: int, seed: int = 0,
                 weights: dict[str, float] | None = None):
        from hytron.packing import PackedLoader

        self.loader = PackedLoader(data_dir, seq_len, batch_size, seed=seed, weights=weights)

    def __next__(self) -> Batch:
        x, y = next(self.loader)
        return x, y, torch.ones_like(y, dtype=torch.bool)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)


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


def chat_batches(examples: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int,
                 seed: int = 0) -> ChatBatches:
    """Endless shuffled, resumable batches of encoded chat examples (ids, assistant_mask), epoch after epoch."""
    if not examples:
        raise ValueError("chat_batches: no examples")
    return ChatBatches(examples, batch_size, seed, pad_id)


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


# ---- the loop -------------------------------------------------------------------------------------------------
def finetune(model: nn.Module, batches, cfg: TuneConfig, *, teacher: nn.Module | None = None,
             eval_batches: list[Batch] | None = None, progress: bool = True,
             max_steps_this_run: int | None = None) -> dict:
    """Train `model`'s trainable parameters for `cfg.steps` (resuming from `cfg.out_dir`); returns the summary
    with `before` and `after` evaluations and the parameter counts."""
    # ---- setup, optimizer ----------------------------------------------------------------------------------
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("finetune: the model has no trainable parameters")
    if teacher is not None:
        tv, sv = teacher.lm_head.out_features, model.lm_head.out_features
        if tv != sv:
            raise ValueError(f"distillation needs one vocabulary: teacher has {tv} ids, student {sv}")
        teacher.eval().requires_grad_(False)
    torch.manual_seed(cfg.seed)
    save_resolved(cfg, Path(cfg.out_dir) / "config.json")
    optimizer = make_optimizer(model, cfg.optim)

    def evaluate_now() -> dict:
        return evaluate(model, eval_batches, teacher, cfg.kd_topk, cfg.kd_temperature) if eval_batches else {}

    # ---- loop -------------------------------------------------------------------------------------------------
    run = Run(cfg, model, optimizer, batches, extra=lambda step: {"before": before})
    before = run.resumed.get("before")
    if before is None:
        before = evaluate_now()
        run.metrics.write({"step": 0, **before})
    model.train()
    for step in run.steps(progress, max_steps_this_run):
        lr = set_lr(optimizer, step, cfg.steps, cfg.optim)
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
        grad_norm = clip_and_step(model, optimizer, cfg.grad_clip)
        value = float(loss.detach())
        run.log({"step": step + 1, "loss": value, "lr": lr, "grad_norm": grad_norm, **parts}, loss=value)
        if run.due(cfg.eval_every, step + 1):
            run.log_eval(step + 1, evaluate_now())

    # ---- finish -------------------------------------------------------------------------------------------
    summary = run.finish(evaluate_now)
    model.eval()
    return {**summary, "after": {k: summary[k] for k in summary if k in ("val_loss", "val_tokens", "kl_to_teacher")},
            "trainable_params": sum(p.numel() for p in params),
            "total_params": sum(p.numel() for p in model.parameters())}
