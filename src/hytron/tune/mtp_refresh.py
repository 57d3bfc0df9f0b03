"""LoRA and distillation keep the model's MTP head fresh: after the adapters (or the student) train, a short
head-only distillation of the MTP head against the trained model's own predictions.

Why distillation and not an adapter on the MTP block trained on the data: a draft is accepted when it equals the
main model's choice, so the target that raises acceptance is the adapted model's next-token distribution at the
position the head predicts, not the data's token. Depth k's logits at t are trained towards the adapted model's
logits at t+k (forward KL on their top-k, `hytron.tune.distill.topk_kl`), chained as in training
(`HybridLM.mtp_logits`). The main model runs once per batch without gradients; only the head's parameters train
(a few percent of the model), so it is cheap beside the LoRA run, needs no labels (chat data works as well as
text), and does not depend on which Linears the adapters cover. The refreshed head travels in the merged model and
beside the PEFT adapter (`mtp_head.safetensors`, which peft ignores and `hytron merge` applies: peft skips `mtp.*`
for nemotron_h).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

from hytron.train import distributed as dist
from hytron.train import mtp as mtp_head
from hytron.train.loop import clip_and_step, set_lr
from hytron.tune.distill import teacher_topk, topk_kl


def refresh_steps(cfg) -> int:
    """`model.mtp.refresh_steps`, or a quarter of the adapter run's steps (at least 20)."""
    return cfg.model.mtp.refresh_steps or max(20, cfg.steps // 4)


def distill_mtp_head(model, batches, cfg, steps: int | None = None) -> dict:
    """Train only `model.mtp` for `steps` on `batches` of (inputs, targets, loss_mask) towards `model`'s own
    predictions (module docstring); `cfg` is the LoRA run's `hytron.tune.TuneConfig` (optimizer, precision,
    kd_topk, kd_temperature, model.mtp). The rest of the model is frozen during it and left as it was (its
    trainable parameters stay trainable); the head trains in fp32 and keeps its dtype. Returns {"steps", "depths",
    "kl_first", "kl_last"} (the mean top-k KL over the depths, nats)."""
    if model.mtp is None:
        raise ValueError("distill_mtp_head: the model has no MTP head")
    if cfg.distributed == "fsdp":
        raise ValueError("distill_mtp_head: the head-only distillation runs single-process or under DDP, not FSDP")
    steps = steps or refresh_steps(cfg)
    depths = cfg.model.mtp.depths or mtp_head.REFRESH_DEPTHS
    device = model.lm_head.weight.device
    amp = cfg.autocast(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)
    # the head's own weights (LoRA adapters that matched its Linears get no signal from the LoRA run: left at 0)
    head = [p for name, p in model.mtp.named_parameters() if "lora_" not in name]
    dtypes = [p.dtype for p in head]
    with torch.no_grad():
        for p in head:
            p.data = p.data.float()  # fp32 masters while training, the head's dtype again afterwards
            p.requires_grad_(True)
    optim = cfg.optim
    warm = min(optim.warmup_steps, steps // 10)
    opt = torch.optim.AdamW(head, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps, weight_decay=0.0)
    spec = replace(optim, warmup_steps=warm)
    was = model.training
    model.eval()  # the main model is the teacher: no dropout in it
    kls = []
    for step in range(steps):
        set_lr(opt, step, steps, spec)
        x, _, m = (t.to(device) for t in next(batches))
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            with torch.no_grad():
                hidden = model(x, return_hidden=True)
                teacher = model.lm_head(hidden).float()
            drafts = model.mtp_logits(x, hidden, depths)
        loss = torch.stack([topk_kl(d.float(), *teacher_topk(teacher[:, k:], cfg.kd_topk), cfg.kd_temperature,
                                    m[:, k:]) for k, d in enumerate(drafts, 1)]).mean()
        loss.backward()
        for p in head:  # under DDP every rank distils the same head (a no-op in one process)
            if p.grad is not None:
                p.grad = dist.all_reduce_mean(p.grad)
        clip_and_step(model, opt, optim.grad_clip)
        kls.append(float(loss.detach()))
    model.train(was)
    model.requires_grad_(False)
    with torch.no_grad():
        for p, dtype in zip(head, dtypes):
            p.data = p.data.to(dtype)
    for p in trainable:
        p.requires_grad_(True)
    print(f"[mtp] head distilled from the adapted model: {steps} steps, {depths} depths, top-k KL "
          f"{kls[0]:.3f} -> {kls[-1]:.3f}", file=sys.stderr, flush=True)
    return {"steps": steps, "depths": depths, "kl_first": kls[0], "kl_last": kls[-1]}


def refresh_head(model, batches, cfg, prompts: list[list[int]], before: dict | None, stage: str = "lora") -> dict:
    """After a stage that trained the model but not its head (`stage`: LoRA's adapters, a distillation run's
    student): the head distilled (unless `model.mtp.refresh` is false) and the acceptance lengths for the result
    JSON, {"mtp_acceptance": {"before", "after", "without_refresh"}, "mtp_refresh": facts or None}; {} for a model
    without a head. `before` is `hytron.train.mtp.acceptance` before the stage."""
    if model.mtp is None:
        return {}
    stale = mtp_head.acceptance(model, prompts)
    if not cfg.model.mtp.refresh or cfg.distributed == "fsdp":
        if cfg.model.mtp.refresh:
            print(f"[mtp] the MTP head was not refreshed: its distillation runs single-process or under DDP, not "
                  f"FSDP; it drafts for the model before the {stage} run", file=sys.stderr, flush=True)
        return {"mtp_acceptance": mtp_head.report(before, stale, stage), "mtp_refresh": None}
    facts = distill_mtp_head(model, batches, cfg)
    return {"mtp_acceptance": {**mtp_head.report(before, mtp_head.acceptance(model, prompts), stage),
                               "without_refresh": stale}, "mtp_refresh": facts}


HEAD_FILE = "mtp_head.safetensors"  # beside a PEFT adapter (peft ignores it): the head refreshed for those adapters


def save_head(model, adapter_dir: str | Path) -> Path:
    """Write the model's MTP head (`mtp.*`, LoRA adapters of its Linears excluded) into `adapter_dir`, so the
    adapter keeps the head distilled for it; `load_head` puts it back (`hytron merge` does)."""
    from safetensors.torch import save_file

    path = Path(adapter_dir) / HEAD_FILE
    state = {f"mtp.{k}": v.detach().contiguous().cpu() for k, v in model.mtp.state_dict().items() if "lora_" not in k}
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def load_head(model, adapter_dir: str | Path) -> bool:
    """Load `save_head`'s file from `adapter_dir` into the model's MTP head; False when the adapter has none."""
    from safetensors.torch import load_file

    path = Path(adapter_dir) / HEAD_FILE
    if not path.is_file() or model.mtp is None:
        return False
    state = {k.removeprefix("mtp."): v for k, v in load_file(str(path)).items()}
    mine = {k: v for k, v in model.mtp.state_dict().items() if "lora_" not in k}
    if set(state) != set(mine) or any(state[k].shape != mine[k].shape for k in mine):
        raise ValueError(f"{path}: the MTP head it holds does not match this model's ({model.config.mtp_pattern!r})")
    with torch.no_grad():
        for k, v in mine.items():
            v.copy_(state[k])
    return True
