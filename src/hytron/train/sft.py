"""Chat SFT, top to bottom: loss only on assistant tokens, built from the pre-training loop's pieces.

`sft(config)` trains a model (a preset, or `model.init_from` a Nemotron-H directory) on chat JSONL rows:
`{"messages": [{role, content[, reasoning_content]}, ...], "reasoning": "on" | "off"}` (the per-row switch
of Nemotron's post-training data; `off` drops the reasoning so the turn trains the empty `<think></think>`
that `/no_think` pre-fills). Rows are rendered by the
tokenizer's chat template; the loss mask is the template's assistant mask (assistant content and its
`<|im_end|>`, nothing of the system/user turns or role headers), averaged over the step's assistant tokens.
A model with an MTP head trains it along with pre-training's MTP loss over the assistant targets and reports its
acceptance length before and after (`hytron.train.mtp`; `model.mtp.refresh=false` leaves the head alone).
Setup (model, precision, wrap, tokenizer) is `hytron.train.setup`'s and the run bookkeeping (exact resume,
metrics, progress, save on signal, summary) `hytron.train.loop.Run`'s; this file keeps the loop body.
"""

from __future__ import annotations

import torch

from hytron.config import ConfigError
from hytron.data.chat import read_chat_jsonl
from hytron.train import distributed as dist
from hytron.train import mtp as mtp_head
from hytron.train.batches import ChatBatches, collate, encode_rows, evaluate_masked, masked_losses
from hytron.train.loop import Run, clip_and_step, export_model, make_optimizer, set_lr
from hytron.train.recipe import SFTConfig
from hytron.train.setup import load_tokenizer, prepare_model, start, switch_precision


def sft(cfg: SFTConfig, *, progress: bool = True, max_steps_this_run: int | None = None) -> dict:
    """Fine-tune (or resume) the run described by `cfg`; returns a summary (see the module docstring)."""
    # ---- setup, model, optimizer -------------------------------------------------------------------------
    if not cfg.data.path:
        raise ConfigError("data.path: set it to a chat JSONL file (hytron reasoning-data --out FILE)")
    info = start(cfg)
    tokenizer = load_tokenizer(cfg)
    model, wrapped, recipe, amp = prepare_model(cfg, tokenizer.vocab_size, info, trains_mtp=True)
    depths = mtp_head.mtp_depths(cfg.model.mtp, model)  # a model's MTP head trains along (hytron.train.mtp)
    o = cfg.optim
    optimizer = make_optimizer(model, o)

    # ---- data: a seeded held-out share of the rows ---------------------------------------------------------
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

    def evaluate() -> dict:
        return evaluate_masked(wrapped, val_examples, cfg.data.batch_size, tokenizer.pad_id, info, amp)

    # the MTP head's acceptance length on held-out prompts, before and after (single process: decoding is local)
    prompts = mtp_head.heldout_prompts(collate([e], tokenizer.pad_id) for e in val_examples or train_examples)
    prompts = prompts if info.world_size == 1 else []
    before = mtp_head.acceptance(model, prompts)

    # ---- loop -------------------------------------------------------------------------------------------------
    run = Run(cfg, model, optimizer, batches, is_main=info.is_main)
    if run.start_step == 0:
        run.metrics.write({"step": 0, "train_rows": len(train_examples), "val_rows": len(val_examples),
                           "dropped_too_long": dropped})
    wrapped.train()
    for step in run.steps(progress, max_steps_this_run):
        lr = set_lr(optimizer, step, cfg.steps, o)
        switch_precision(model, recipe, step, cfg.steps)
        inputs, targets, mask = next(batches)
        n_tokens = dist.all_reduce_sum(mask.sum().double().to(info.device)).clamp(min=1)
        sums: dict[str, torch.Tensor] = {}  # "loss" and, with MTP, "mtp_loss_k": summed over assistant targets
        micro = cfg.data.batch_size
        for i in range(cfg.data.grad_accum):
            x, y, m = (t[i * micro:(i + 1) * micro].to(info.device) for t in (inputs, targets, mask))
            with dist.no_grad_sync(wrapped, skip=i < cfg.data.grad_accum - 1):
                total, parts = masked_losses(wrapped, x, y, m, amp, depths, cfg.model.mtp.loss_scale)
                # every rank divides by the global token count; DDP averages gradients over ranks
                (total * info.world_size / n_tokens).backward()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0) + value.detach().double().cpu()
        grad_norm = clip_and_step(model, optimizer, o.grad_clip)
        means = {name: float(dist.all_reduce_sum(v.to(info.device)) / n_tokens) for name, v in sums.items()}
        loss = means["loss"]
        run.log({"step": step + 1, **means, "lr": lr, "grad_norm": grad_norm,
                 "assistant_tokens": int(n_tokens)}, loss=loss, lr=lr)
        if run.due(cfg.eval_every, step + 1):
            run.log_eval(step + 1, evaluate())

    # ---- finish -------------------------------------------------------------------------------------------
    def final() -> dict:
        after = mtp_head.acceptance(model, prompts)
        return {**evaluate(), **({"mtp_acceptance": mtp_head.report(before, after, "sft")} if after else {})}

    return run.finish(final, lambda state: export_model(model.config, state, tokenizer, run.out / "model"))
