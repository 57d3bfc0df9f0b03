"""The pieces every training loop shares (pre-training, SFT, RL, tuning): optimizer, LR, stop signals, save/resume,
export, and `Run`, the bookkeeping around a loop body.

Loops stay readable top to bottom and call these; there is no Trainer class to subclass.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from hytron.config import to_dict
from hytron.data.io import write_json
from hytron.lowp.linear import QuantLinear
from hytron.model import HybridLM
from hytron.model.loss import cross_entropy
from hytron.train import checkpoint as ckpt
from hytron.train import distributed as dist
from hytron.train.metrics import MetricsLog, Progress
from hytron.train.recipe import OptimSpec
from hytron.train.schedule import lr_at

# how a run ended: the summary carries this plus a human `message` ("paused at step 5 of 20", ...)
RunStatus = Literal["finished", "paused", "interrupted"]


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the current step and exits cleanly."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: signals stay with the caller
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_adamw_ok(params) -> bool:
    """Whether torch's fused AdamW (one kernel per step instead of ~10 passes per parameter; on a CPU the
    for-loop default costs ~10x more: issue 27) takes these parameters: plain tensors (not DTensors or other
    subclasses, as FSDP makes) of a float dtype, all on one CPU or CUDA device type."""
    params = list(params)
    return bool(params) and all(type(p) in (torch.Tensor, torch.nn.Parameter) and p.dtype in _FUSED_DTYPES
                                and p.device.type in ("cpu", "cuda") for p in params) \
        and len({p.device.type for p in params}) == 1


def make_optimizer(model: HybridLM, o: OptimSpec) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters (no weight decay on norms, biases, A_log, D, dt_bias); torch's
    fused implementation where it applies (`fused_adamw_ok`; transformers' Trainer defaults to it too)."""
    groups = model.param_groups(o.weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = fused_adamw_ok(params)
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused or None)
    if fused:
        # the fused kernel writes the parameters without moving their version counters (torch 2.13), and
        # QuantLinear re-quantizes a weight only when its version moves: move them as the for-loop AdamW does
        opt.register_step_post_hook(lambda *_: torch.autograd.graph.increment_version(params))
    return opt


def set_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, o: OptimSpec) -> float:
    lr = lr_at(step, base_lr=o.lr, total_steps=total_steps, warmup_steps=o.warmup_steps, schedule=o.schedule,
               min_lr_ratio=o.min_lr_ratio, decay_fraction=o.decay_fraction)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def next_token_losses(out, targets: torch.Tensor, mtp_loss_scale: float = 0.3, ignore_index: int = -100,
                      reduction: str = "mean") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss to backpropagate, {"loss": next-token loss, "mtp_loss_k": depth k's loss}), all fp32.

    `out` is `model(x)`'s logits (b, L, V), or `model(x, mtp_depths=D)`'s (logits, [depth-k logits (b, L-k, V)]);
    depth k predicts token t+1+k, which is targets[:, t+k]. With D depths the backpropagated loss is the
    next-token loss + mtp_loss_scale x the mean of the D MTP losses (Megatron-Core's MTP objective); "loss"
    stays the next-token loss alone, so runs with and without MTP log comparable numbers. Targets equal to
    `ignore_index` count nowhere; `reduction` "mean" averages each loss over its counted targets, "sum" sums them
    (SFT divides by the step's assistant-token count itself)."""
    def ce(logits, y):
        if reduction == "mean":  # the fused backward (hytron.model.loss); "sum" (SFT's MTP depths) is torch's
            return cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=ignore_index)
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=ignore_index,
                                                 reduction=reduction)

    logits, depths = out if isinstance(out, tuple) else (out, [])
    lm = ce(logits, targets)
    parts = {"loss": lm}
    if not depths:
        return lm, parts
    for k, depth_logits in enumerate(depths, 1):
        parts[f"mtp_loss_{k}"] = ce(depth_logits, targets[:, k:])
    mtp = torch.stack([parts[f"mtp_loss_{k}"] for k in range(1, len(depths) + 1)]).mean()
    return lm + mtp_loss_scale * mtp, parts


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> float:
    """Clip the global gradient norm (0 disables), step, zero the gradients; returns the pre-clip norm."""
    params = [p for p in model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip > 0 else torch.zeros(())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def resume(ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           loader=None) -> tuple[int, dict[str, Any]]:
    """Load the newest valid checkpoint into model, optimizer, RNG, the data loader's position and the
    low-precision layers' own state (stochastic-rounding generators, amax histories, switches).

    Returns (step, the checkpoint's JSON state); (0, {}) when the run has no checkpoint yet."""
    found = ckpt.load_latest(ckpt_dir)
    if found is None:
        return 0, {}
    path, tensors, state = found
    optim_sd = ckpt.unflatten_optimizer_state(tensors.get("optimizer", {}), state["optimizer"])
    dist.load_full_state(model, optimizer, tensors["model"], optim_sd)
    if loader is not None:
        loader.load_state_dict(state["loader"])
    ckpt.set_rng_state(tensors["rng"], state["rng"])
    if state.get("precision") is not None:
        from hytron.lowp.convert import load_precision_state

        load_precision_state(model, ckpt.join_tensors(state["precision"], tensors.get("precision", {})))
    if dist.rank() == 0:
        print(f"resumed from {path} at step {state['step']}")
    return int(state["step"]), state


def save_checkpoint(ckpt_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep: int) -> dict:
    """Write a checkpoint of model, optimizer, RNG and low-precision layer state plus JSON `state`
    (collective under FSDP: call on every rank; rank 0 writes). Returns the full model state dict."""
    model_sd, optim_sd = dist.full_state(model, optimizer)
    if dist.rank() == 0:
        opt_tensors, opt_meta = ckpt.flatten_optimizer_state(optim_sd)
        rng_tensors, rng_meta = ckpt.rng_state()
        groups = {"model": model_sd, "optimizer": opt_tensors, "rng": rng_tensors}
        precision = None
        if any(isinstance(m, QuantLinear) for m in model.modules()):
            from hytron.lowp.convert import precision_state

            groups["precision"], precision = ckpt.split_tensors(precision_state(model))
        ckpt.write_checkpoint(ckpt_dir, step, groups,
                              {**state, "optimizer": opt_meta, "rng": rng_meta, "precision": precision}, keep=keep)
    dist.barrier()
    return model_sd


def export_model(config, state: dict, tokenizer, path: Path) -> Path:
    """Write trained weights as a Nemotron-H directory with `tokenizer` (may be None).

    `state` is a full (unsharded) state dict. Quantized layers (a lowp recipe) keep their master weights under
    the plain names; only the tensors a plain `HybridLM` has are exported, so the directory loads anywhere.
    """
    with torch.device("meta"):
        plain = HybridLM(config)
    plain.load_state_dict({k: state[k].detach().cpu() for k in plain.state_dict()}, assign=True)
    return plain.save_pretrained(path, tokenizer=tokenizer)


class Run:
    """One run's bookkeeping around a loop body: resume, metrics, progress, stop signals, checkpoints, summary.

        run = Run(cfg, model, optimizer, loader, is_main=info.is_main)   # resumes from cfg.out_dir/checkpoints
        for step in run.steps(progress):          # 0-based; saves on SIGINT/SIGTERM and every checkpoint_every
            ...                                   # the stage's own step, then
            run.log({"step": step + 1, "loss": loss}, loss=loss)
        summary = run.finish(final_eval, export)  # finished: evaluate, save, export; else paused or interrupted

    `cfg` needs `name`, `out_dir`, `steps`, `log_every`, `checkpoint_every`, `keep_checkpoints`. `loader` is
    anything with `state_dict()`/`load_state_dict()` whose position must survive a restart (or None);
    `extra(step)` adds JSON facts to every checkpoint, metrics record of an evaluation and the summary.
    """

    def __init__(self, cfg, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader=None, *,
                 is_main: bool = True, extra: Callable[[int], dict] | None = None):
        self.cfg, self.model, self.optimizer, self.loader = cfg, model, optimizer, loader
        self.out, self.is_main = Path(cfg.out_dir), is_main
        self.extra = extra or (lambda step: {})
        self.step, self.resumed = resume(self.out / "checkpoints", model, optimizer, loader)
        self.start_step, self.last_eval = self.step, {}
        self.status: RunStatus = "finished"
        self.message = ""
        self.metrics = MetricsLog(self.out / "metrics.jsonl", enabled=is_main, truncate_after=self.step)
        self.bar: Progress | None = None
        self.step_start = time.perf_counter()

    def save(self) -> dict:
        """A checkpoint at the current step (collective under FSDP); returns the full model state dict."""
        state = {"config": to_dict(self.cfg), **self.extra(self.step)}
        if self.loader is not None:
            state["loader"] = self.loader.state_dict()
        return save_checkpoint(self.out / "checkpoints", self.step, self.model, self.optimizer, state,
                               keep=self.cfg.keep_checkpoints)

    def due(self, every: int, n: int) -> bool:
        """Whether a periodic action (every `every` steps; 0: never) falls after step `n`, short of the end."""
        return bool(every) and n % every == 0 and n < self.cfg.steps

    def steps(self, progress: bool = True, max_steps_this_run: int | None = None) -> Iterator[int]:
        """The step indices still to run; after each body, a checkpoint when due and on a stop signal."""
        end = self.cfg.steps if max_steps_this_run is None else min(self.cfg.steps, self.step + max_steps_this_run)
        self.bar = Progress(total=self.cfg.steps, initial=self.step, enabled=progress and self.is_main,
                            desc=self.cfg.name)
        with StopRequested() as stop:
            while self.step < end:
                self.step_start = time.perf_counter()
                yield self.step
                self.step += 1
                if stop.signal is not None:
                    self.save()
                    self.status = "interrupted"
                    self.message = f"interrupted by signal {stop.signal}; checkpoint saved at step {self.step}"
                    break
                if self.due(self.cfg.checkpoint_every, self.step):
                    self.save()
        self.bar.close()

    def seconds(self) -> float:
        """Wall time of the current step so far."""
        return time.perf_counter() - self.step_start

    def log(self, record: dict, **shown) -> None:
        """Write `record` (its `step` is 1-based) at the log cadence, refuse a non-finite loss, show `shown`."""
        n = record["step"]
        record.setdefault("step_s", self.seconds())
        if self.cfg.log_every and (n % self.cfg.log_every == 0 or n == 1):
            self.metrics.write(record)
        loss = record.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {n}; lower the learning rate or check the data "
                                     f"(last good checkpoint: {self.out / 'checkpoints'})")
        if self.bar is not None:
            self.bar.update(**shown)

    def log_eval(self, n: int, evals: dict) -> None:
        """Record an evaluation after step `n` (kept for the summary)."""
        self.last_eval = evals
        if evals:
            self.metrics.write({"step": n, **self.extra(n), **evals})
        if evals and self.bar is not None and "val_loss" in evals:
            self.bar.note(f"step {n}: val_loss {evals['val_loss']:.4f}")

    def finish(self, final_eval: Callable[[], dict] | None = None,
               export: Callable[[dict], Path] | None = None) -> dict:
        """End the run and write OUT/summary.json: finished, a last evaluation, a checkpoint and `export(state
        dict)` (rank 0); paused (max_steps_this_run), a checkpoint to resume from; interrupted, already saved.
        A run that had finished before returns its summary again."""
        path = self.out / "summary.json"
        if self.start_step >= self.cfg.steps and path.is_file():
            done = json.loads(path.read_text())
            if done.get("status") == "finished":
                dist.teardown()
                return done
        if self.status == "finished" and self.step < self.cfg.steps:
            self.status, self.message = "paused", f"paused at step {self.step} of {self.cfg.steps}"
        summary = {"status": self.status, "message": self.message or self.status, "step": self.step,
                   "out_dir": str(self.out), **self.extra(self.step)}
        if self.status == "finished":
            self.log_eval(self.step, final_eval() if final_eval is not None else {})
            model_sd = self.save()
            if self.is_main and export is not None:
                summary["model_dir"] = str(export(model_sd))
        elif self.status == "paused":
            self.save()
        summary.update(self.last_eval)
        if self.is_main:
            write_json(path, summary)
        dist.teardown()
        return summary
