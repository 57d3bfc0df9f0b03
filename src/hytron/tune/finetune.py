"""The tuning loop for an in-memory model (full fine-tune, LoRA, or distillation from a teacher), top to bottom.

`finetune(model, batches, cfg)` trains whatever parameters of `model` require grad (all of them, or only
LoRA adapters after `apply_lora`) on batches of (inputs, targets, loss_mask): packed pre-training text
(`packed_batches`, every position counts) or chat examples (`chat_batches`, assistant tokens only). With a
`teacher` the loss is `distill_loss` (forward KL on the teacher's top-k logits), else cross-entropy.
Run bookkeeping is `hytron.train.loop.Run`'s: checkpoints in `cfg.out_dir`, so a stopped run started again
with the same model, data and config resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hytron.train import distributed as dist
from hytron.train.batches import ChatBatches
from hytron.train.loop import Run, clip_and_step, make_optimizer, set_lr
from hytron.train.setup import place_model, start
from hytron.tune.distill import distill_loss, teacher_topk, topk_kl
from hytron.tune.recipe import TuneConfig

Batch = tuple[Tensor, Tensor, Tensor]  # inputs (B, L), targets (B, L), loss_mask (B, L) bool


def tune_device(cfg: TuneConfig) -> torch.device:
    """The device a tuning run will use (what `finetune` resolves), to load models onto before it starts."""
    return dist.setup(cfg.device).device


# ---- data -------------------------------------------------------------------------------------------------
class packed_batches:  # noqa: N801 - used like the function it replaced
    """Endless training batches from a packed-data directory (`hytron tokenize`), blend weights applied, every
    position trained; resumable (`state_dict`) like the loader underneath."""

    def __init__(self, data_dir: str | Path, seq_len: int, batch_size: int, seed: int = 0,
                 weights: dict[str, float] | None = None, rank: int = 0, world_size: int = 1):
        from hytron.packing import PackedLoader

        self.loader = PackedLoader(data_dir, seq_len, batch_size, seed=seed, weights=weights, rank=rank,
                                   world_size=world_size)

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
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> ChatBatches:
    """Endless shuffled, resumable batches of encoded chat examples (ids, assistant_mask), epoch after epoch."""
    if not examples:
        raise ValueError("chat_batches: no examples")
    return ChatBatches(examples, batch_size, seed, pad_id, rank=rank, world_size=world_size)


# ---- evaluation -----------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], teacher: nn.Module | None = None, k: int = 64,
             temperature: float = 1.0, amp: torch.dtype | None = None) -> dict:
    """Masked cross-entropy (nats/token) and, with a teacher, the top-k KL to it, over fixed batches (moved to
    the model's device; every rank scores all of them, so an FSDP forward stays collective)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    ce_sum, kl_sum, count = 0.0, 0.0, 0
    for x, y, m in batches:
        x, y, m = x.to(device), y.to(device), m.to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
            t_logits = teacher(x) if teacher is not None else None
        ce_sum += float((F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
                         * m.flatten()).sum())
        if t_logits is not None:
            values, indices = teacher_topk(t_logits.float(), k)
            kl_sum += float(topk_kl(logits.float(), values, indices, temperature, m, reduction="sum"))
        count += int(m.sum())
    model.train(was)
    out = {"val_loss": ce_sum / max(1, count), "val_tokens": count}
    if teacher is not None:
        out["kl_to_teacher"] = kl_sum / max(1, count)
    return out


# ---- the loop -------------------------------------------------------------------------------------------------
def finetune(model: nn.Module, batches, cfg: TuneConfig, *, teacher: nn.Module | None = None,
             eval_batches: list[Batch] | None = None, progress: bool = True,
             max_steps_this_run: int | None = None, export: Callable[[dict], Path] | None = None) -> dict:
    """Train `model`'s trainable parameters for `cfg.steps` (resuming from `cfg.out_dir`); returns the summary
    with `before` and `after` evaluations and the parameter counts.

    Setup is pre-training's (`hytron.train.setup`): the process group and device (`cfg.device`), threads, the
    run folder with its resolved config, and the model placed on the device and wrapped for `cfg.distributed`;
    bookkeeping is `Run`'s. Trainable parameters are kept in fp32 (the optimizer's master weights) whatever the
    frozen weights' dtype; compute runs under `cfg.autocast(device)`.

    Write results with `export`: a finished run calls it on rank 0 with the model's full (unsharded, CPU) state
    dict, gathered from every rank while the process group still exists (under FSDP the model's own parameters
    are shards), and returns its path as `model_dir`."""
    # ---- setup, optimizer ----------------------------------------------------------------------------------
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("finetune: the model has no trainable parameters")
    if teacher is not None:
        tv, sv = teacher.lm_head.out_features, model.lm_head.out_features
        if tv != sv:
            raise ValueError(f"distillation needs one vocabulary: teacher has {tv} ids, student {sv}")
        teacher.eval().requires_grad_(False)
    info = start(cfg)
    with torch.no_grad():
        for p in params:  # fp32 masters: Adam on bf16 weights loses the small updates
            p.data = p.data.float()
    wrapped = place_model(model, cfg, info)
    if teacher is not None:
        teacher.to(info.device)
    amp = cfg.autocast(info.device)
    torch.manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg.optim)

    def evaluate_now() -> dict:
        return evaluate(wrapped, eval_batches, teacher, cfg.kd_topk, cfg.kd_temperature, amp) if eval_batches else {}

    # ---- loop -------------------------------------------------------------------------------------------------
    run = Run(cfg, model, optimizer, batches, is_main=info.is_main, extra=lambda step: {"before": before})
    before = run.resumed.get("before")
    if before is None:
        before = evaluate_now()
        run.metrics.write({"step": 0, **before})
    wrapped.train()
    accum = cfg.data.grad_accum
    for step in run.steps(progress, max_steps_this_run):
        lr = set_lr(optimizer, step, cfg.steps, cfg.optim)
        sums = {"loss": 0.0}
        for i in range(accum):
            x, y, m = (t.to(info.device) for t in next(batches))
            with dist.no_grad_sync(wrapped, skip=i < accum - 1):
                with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
                    logits = wrapped(x)
                    t_logits = teacher(x).detach() if teacher is not None else None
                parts = {}
                if t_logits is not None:
                    loss, parts = distill_loss(logits.float(), t_logits.float(), y, m, k=cfg.kd_topk,
                                               temperature=cfg.kd_temperature, alpha=cfg.kd_alpha)
                else:
                    loss = (F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
                            * m.flatten()).sum() / m.sum().clamp(min=1)
                (loss / accum).backward()
            for name, v in {"loss": float(loss.detach()), **parts}.items():
                sums[name] = sums.get(name, 0.0) + v / accum
        grad_norm = clip_and_step(model, optimizer, cfg.optim.grad_clip)
        # logged: the mean over every rank's micro-batches (rank 0's alone under DDP/FSDP would be a sample of it)
        means = dist.all_reduce_mean(torch.tensor(list(sums.values()), dtype=torch.float64, device=info.device))
        logged = dict(zip(sums, means.tolist()))
        run.log({"step": step + 1, **logged, "lr": lr, "grad_norm": grad_norm}, loss=logged["loss"])
        if run.due(cfg.eval_every, step + 1):
            run.log_eval(step + 1, evaluate_now())

    # ---- finish -------------------------------------------------------------------------------------------
    summary = run.finish(evaluate_now, export)
    model.eval()
    return {**summary, "after": {k: summary[k] for k in summary if k in ("val_loss", "val_tokens", "kl_to_teacher")},
            "trainable_params": sum(p.numel() for p in params),
            "total_params": sum(p.numel() for p in model.parameters())}
