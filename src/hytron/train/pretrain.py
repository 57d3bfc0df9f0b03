"""The pre-training loop, top to bottom: setup → model → precision → optimizer → data → resume → loop.

One function, `pretrain(config)`, runs single-process or under `torchrun` (DDP / FSDP2). Every
`checkpoint_every` steps (and on SIGINT/SIGTERM, and at the end) it writes a checkpoint that holds
model, optimizer, RNG states and the data position; started again with the same `out_dir` it resumes
from the newest valid checkpoint and continues exactly the run that would have happened (bit-identical
losses on CPU). The final model is written as a Nemotron-H model directory with its tokenizer.

`evaluate_hook(model) -> dict` adds metrics of the caller's own to every evaluation (at `eval_every` and at
the end), beside the held-out split's loss: the claims measure clean validation text and QA this way, so
they train through exactly the loop users run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hytron.packing import PackedData, PackedLoader, iter_eval_batches
from hytron.train import distributed as dist
from hytron.train import mtp as mtp_head
from hytron.train.loop import Run, clip_and_step, export_model, make_optimizer, next_token_losses, set_lr
from hytron.train.recipe import TrainConfig
from hytron.train.setup import prepare_model, start, switch_precision


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


def pretrain(cfg: TrainConfig, *, progress: bool = True, max_steps_this_run: int | None = None,
             evaluate_hook: Callable[[torch.nn.Module], dict] | None = None) -> dict:
    """Train (or resume) the run described by `cfg`; returns a summary. See the module docstring."""
    # ---- setup, model, optimizer -------------------------------------------------------------------------
    if not cfg.data.path:
        raise ValueError("data.path: set it to a packed-data directory (hytron tokenize --out DIR)")
    data = PackedData(cfg.data.path)
    info = start(cfg)
    model, wrapped, recipe, amp = prepare_model(cfg, int(data.index["vocab_size"]), info, trains_mtp=True)
    o = cfg.optim
    optimizer = make_optimizer(model, o)

    # ---- data ------------------------------------------------------------------------------------------------
    loader = PackedLoader(data, cfg.data.seq_len, cfg.data.batch_size * cfg.data.grad_accum, seed=cfg.seed,
                          weights=cfg.data.weights, rank=info.rank, world_size=info.world_size)
    tokens_per_step = cfg.data.seq_len * cfg.data.batch_size * cfg.data.grad_accum * info.world_size

    def evaluations() -> dict:
        evals = evaluate(wrapped, data, cfg, info, amp)
        if evaluate_hook is not None:
            was_training = wrapped.training
            wrapped.eval()
            with torch.inference_mode(), torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
                evals.update(evaluate_hook(model))
            wrapped.train(was_training)
        return evals

    # the MTP head's acceptance length on held-out prompts, before and after (single process: decoding is local)
    prompts = mtp_head.heldout_prompts(iter_eval_batches(data, cfg.data.seq_len, cfg.data.batch_size)
                                       ) if model.mtp is not None and info.world_size == 1 else []
    before = mtp_head.acceptance(model, prompts)

    def final_evaluations() -> dict:
        after = mtp_head.acceptance(model, prompts)
        return {**evaluations(), **({"mtp_acceptance": mtp_head.report(before, after, "pretrain")} if after else {})}

    # ---- loop -------------------------------------------------------------------------------------------------
    run = Run(cfg, model, optimizer, loader, is_main=info.is_main,
              extra=lambda step: {"tokens": step * tokens_per_step})
    mtp = cfg.model.mtp  # multi-token prediction: D extra depths through the model's MTP head, or none
    depths = mtp_head.mtp_depths(mtp, model)  # a head the model came with trains too (hytron.train.mtp)
    wrapped.train()
    for step in run.steps(progress, max_steps_this_run):
        lr = set_lr(optimizer, step, cfg.steps, o)
        switch_precision(model, recipe, step, cfg.steps)
        inputs, targets = next(loader)
        sums: dict[str, torch.Tensor] = {}  # "loss" and, with MTP, "mtp_loss_k": summed over micro-batches
        micro = cfg.data.batch_size
        for i in range(cfg.data.grad_accum):
            x = inputs[i * micro:(i + 1) * micro].to(info.device)
            y = targets[i * micro:(i + 1) * micro].to(info.device)
            with dist.no_grad_sync(wrapped, skip=i < cfg.data.grad_accum - 1):
                with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
                    out = wrapped(x, mtp_depths=depths) if depths else wrapped(x)
                loss, parts = next_token_losses(out, y, mtp.loss_scale)
                (loss / cfg.data.grad_accum).backward()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0) + value.detach().double().cpu()
        grad_norm = clip_and_step(model, optimizer, o.grad_clip)
        means = {name: float(dist.all_reduce_mean((v / cfg.data.grad_accum).to(info.device)))
                 for name, v in sums.items()}
        loss = means["loss"]
        tok_s = tokens_per_step / run.seconds()
        run.log({"step": step + 1, **means, "lr": lr, "grad_norm": grad_norm,
                 "tokens": (step + 1) * tokens_per_step, "tok_s": tok_s}, loss=loss, tok_s=tok_s, lr=lr)
        if run.due(cfg.eval_every, step + 1):
            run.log_eval(step + 1, evaluations())

    # ---- finish -------------------------------------------------------------------------------------------
    return run.finish(final_evaluations,
                      lambda state: export_model(model.config, state, packed_tokenizer(data), run.out / "model"))


def packed_tokenizer(data: PackedData):
    """The tokenizer packed data was made with (a copy travels in the packed dir), or None for old dirs."""
    from hytron.tokenizer import Tokenizer

    tok_dir = data.dir / "tokenizer"
    return Tokenizer.load(tok_dir) if tok_dir.is_dir() else None
