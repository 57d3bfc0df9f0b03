"""The pre-training loop, top to bottom: setup → model → precision → optimizer → data → resume → loop.

One function, `pretrain(config)`, runs single-process or under `torchrun` (DDP / FSDP2). Every
`checkpoint_every` steps (and on SIGINT/SIGTERM, and at the end) it writes a checkpoint that holds
model, optimizer, RNG states and the data position; started again with the same `out_dir` it resumes
from the newest valid checkpoint and continues exactly the run that would have happened (bit-identical
losses on CPU). The final model is written as a Nemotron-H model directory with its tokenizer.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hytron.config import save_resolved
from hytron.model import HybridConfig, HybridLM
from hytron.packing import PackedData, PackedLoader, iter_eval_batches
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
from hytron.train.recipe import TrainConfig

LOWP_RECIPES_EXCLUDED = ("auto", "fp32", "bf16")


def build_model(cfg: TrainConfig, vocab_size: int) -> HybridLM:
    """A fresh model from a preset (seeded init) or an existing Nemotron-H directory (continued pre-training)."""
    if cfg.model.init_from:
        model = HybridLM.from_pretrained(cfg.model.init_from)
        if model.config.vocab_size < vocab_size:
            raise ValueError(f"model.init_from {cfg.model.init_from} has vocab_size {model.config.vocab_size} but "
                             f"the data's tokenizer has {vocab_size} ids; use data tokenized with its tokenizer")
        return model
    overrides = {"vocab_size": vocab_size, **cfg.model.overrides}
    torch.manual_seed(cfg.seed)
    return HybridLM(HybridConfig.from_name(cfg.model.preset, **overrides))


def apply_precision(model: HybridLM, precision: str):
    """Swap the model's Linears for quantized ones when `precision` names a hytron.lowp recipe."""
    if precision in LOWP_RECIPES_EXCLUDED:
        return None
    from hytron.lowp import PrecisionRecipe, convert

    recipe = PrecisionRecipe.from_name(precision)
    convert(model, recipe)
    return recipe


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return None


@torch.no_grad()
def evaluate(model, data: PackedData, cfg: TrainConfig, info: dist.DistInfo, amp: torch.dtype | None) -> dict:
    """Validation loss (nats/token) and bits per byte over the held-out split's first `eval_batches` batches."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64)  # [sum of token losses, tokens]
    for x, y in iter_eval_batches(data, cfg.data.seq_len, cfg.data.batch_size, rank=info.rank,
                                  world_size=info.world_size, max_batches=cfg.eval_batches or None):
        x, y = x.to(info.device), y.to(info.device)
        with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        total[0] += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        total[1] += y.numel()
    total = dist.all_reduce_sum(total.to(info.device)).cpu()
    model.train(was_training)
    if total[1] == 0:
        return {}
    loss = float(total[0] / total[1])
    val = data.index["splits"]["val"]
    bytes_per_token = val["num_bytes"] / max(1, val["num_tokens"])
    return {"val_loss": loss, "val_bpb": loss / math.log(2) / bytes_per_token, "val_tokens": int(total[1])}


def pretrain(cfg: TrainConfig, *, progress: bool = True, max_steps_this_run: int | None = None) -> dict:
    """Train (or resume) the run described by `cfg`; returns a summary. See the module docstring."""
    # ---- setup ---------------------------------------------------------------------------------------------
    info = dist.setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    if not cfg.data.path:
        raise ValueError("data.path: set it to a packed-data directory (hytron tokenize --out DIR)")
    data = PackedData(cfg.data.path)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out / "config.json")

    # ---- model and precision ----------------------------------------------------------------------------
    model = build_model(cfg, int(data.index["vocab_size"])).to(info.device)
    recipe = apply_precision(model, cfg.precision)
    amp = autocast_dtype(cfg.precision, info.device)
    if cfg.compile:
        from hytron.model.kernels import compile_blocks

        compile_blocks(model)
    wrapped = dist.wrap(model, cfg.distributed, info)

    # ---- optimizer ----------------------------------------------------------------------------------------
    o = cfg.optim
    optimizer = make_optimizer(model, o)

    # ---- data ------------------------------------------------------------------------------------------------
    loader = PackedLoader(data, cfg.data.seq_len, cfg.data.batch_size * cfg.data.grad_accum, seed=cfg.seed,
                          weights=cfg.data.weights, rank=info.rank, world_size=info.world_size)
    tokens_per_step = cfg.data.seq_len * cfg.data.batch_size * cfg.data.grad_accum * info.world_size

    # ---- resume -------------------------------------------------------------------------------------------
    start_step, _ = resume(out / "checkpoints", model, optimizer, loader)
    metrics = MetricsLog(out / "metrics.jsonl", enabled=info.is_main, truncate_after=start_step)

    def save(step: int) -> dict:
        return save_checkpoint(out / "checkpoints", step, model, optimizer,
                               {"loader": loader.state_dict(), "config": cfg.to_dict(),
                                "tokens": step * tokens_per_step}, keep=cfg.keep_checkpoints)

    # ---- loop ---------------------------------------------------------------------------------------------------
    wrapped.train()
    end_step = cfg.steps if max_steps_this_run is None else min(cfg.steps, start_step + max_steps_this_run)
    bar = Progress(total=cfg.steps, initial=start_step, enabled=progress and info.is_main, desc=cfg.name)
    last_eval: dict = {}
    step = start_step
    status = "finished"
    with StopRequested() as stop:
        while step < end_step:
            t0 = time.perf_counter()
            lr = set_lr(optimizer, step, cfg.steps, o)
            if recipe is not None and recipe.should_switch(step, cfg.steps):
                from hytron.lowp import set_high_precision

                set_high_precision(model, True, passes=recipe.high_precision_passes)
            inputs, targets = next(loader)
            loss_sum = torch.zeros((), dtype=torch.float64)
            micro = cfg.data.batch_size
            for i in range(cfg.data.grad_accum):
                x = inputs[i * micro:(i + 1) * micro].to(info.device)
                y = targets[i * micro:(i + 1) * micro].to(info.device)
                with dist.no_grad_sync(wrapped, skip=i < cfg.data.grad_accum - 1):
                    with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
                        logits = wrapped(x)
                    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                    (loss / cfg.data.grad_accum).backward()
                loss_sum += loss.detach().double().cpu()
            grad_norm = clip_and_step(model, optimizer, o.grad_clip)
            step += 1
            loss_value = float(dist.all_reduce_mean((loss_sum / cfg.data.grad_accum).to(info.device)))
            dt = time.perf_counter() - t0
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                      "tokens": step * tokens_per_step, "tok_s": tokens_per_step / dt, "step_s": dt}
            if cfg.log_every and (step % cfg.log_every == 0 or step == 1):
                metrics.write(record)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}; lower optim.lr or check the "
                                         f"data (last good checkpoint: {out / 'checkpoints'})")
            bar.update(loss=loss_value, tok_s=record["tok_s"], lr=lr)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                last_eval = evaluate(wrapped, data, cfg, info, amp)
                metrics.write({"step": step, "tokens": step * tokens_per_step, **last_eval})
                bar.note(f"step {step}: val_loss {last_eval.get('val_loss', float('nan')):.4f}")
            if stop.signal is not None:
                save(step)
                status = f"interrupted by signal {stop.signal}; checkpoint saved at step {step}"
                break
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                save(step)
    bar.close()

    # ---- finish ---------------------------------------------------------------------------------------------
    summary = {"status": status, "step": step, "tokens": step * tokens_per_step, "out_dir": str(out)}
    if step >= cfg.steps and status == "finished" and start_step == cfg.steps and (out / "model").is_dir():
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else summary
        dist.teardown()
        return summary  # already finished earlier: nothing to redo
    if step >= cfg.steps and status == "finished":
        last_eval = evaluate(wrapped, data, cfg, info, amp)
        metrics.write({"step": step, "tokens": step * tokens_per_step, **last_eval})
        model_sd = save(step)
        if info.is_main:
            export_model(model.config, model_sd, packed_tokenizer(data), out / "model")
            summary["model_dir"] = str(out / "model")
    elif status == "finished":
        save(step)  # a partial run (max_steps_this_run): resumable later
        summary["status"] = f"paused at step {step} of {cfg.steps}"
    summary.update(last_eval)
    if info.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if "model_dir" in summary:  # model card and data card travel with every model directory
            from hytron.train.cards import write_cards

            write_cards(out / "model", out, evals={k: v for k, v in last_eval.items() if k != "val_tokens"})
    dist.teardown()
    return summary


def packed_tokenizer(data: PackedData):
    """The tokenizer packed data was made with (a copy travels in the packed dir), or None for old dirs."""
    from hytron.tokenizer import Tokenizer

    tok_dir = data.dir / "tokenizer"
    return Tokenizer.load(tok_dir) if tok_dir.is_dir() else None
