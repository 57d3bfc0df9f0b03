"""Customization verbs: `hytron lora`, `merge`, `distill`, `prune` and `customize RECIPE` (hytron.tune.customize)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hytron.cli.recipes import add_set


def _tune_args(p: argparse.ArgumentParser, steps: int = 100, lr: float = 1e-3) -> None:
    p.add_argument("--data", required=True, help="packed-data directory (hytron tokenize) or chat .jsonl rows")
    p.add_argument("--out", required=True, help="output directory (re-running with it resumes a stopped run)")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    _device_args(p)


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda (torchrun: one per rank)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 autocast on CUDA, fp32 on CPU; bf16: autocast on every device")
    add_set(p)


def _tune_config(args, name: str, steps: int | None = None, **extra):
    """The flags as a `TuneConfig` (the training-run shape every loop takes), then `--set` overrides on it
    (e.g. --set optim.schedule=wsd --set data.grad_accum=4 --set distributed=fsdp)."""
    from hytron.config import apply_overrides, from_dict
    from hytron.tune import TuneConfig

    steps = steps or args.steps
    data = {"name": name, "out_dir": str(Path(args.out) / "run"), "steps": steps, "seed": getattr(args, "seed", 0),
            "threads": args.threads, "device": args.device, "precision": args.precision,
            "eval_batches": getattr(args, "eval_batches", 8),
            "data": {"seq_len": args.seq_len, "batch_size": args.batch_size},
            "optim": {"lr": args.lr, "warmup_steps": max(1, steps // 20), "schedule": "cosine", "weight_decay": 0.0},
            **extra}
    return from_dict(TuneConfig, apply_overrides(data, args.overrides))


LORA = ("Freezes MODEL, trains low-rank adapters on its Linears (attention, Mamba in_proj, MLP by default), writes "
        "OUT/adapter (peft loads it onto transformers' NemotronHForCausalLM) and, with --merge, OUT/model.")
CUSTOMIZE = "Runs a customize recipe (the shipped example: customize); re-running skips finished stages."


def add_lora(sub) -> None:
    p = sub.add_parser("lora", help="train LoRA adapters on a model (PEFT format), optionally merged", description=LORA)
    p.add_argument("model", help="Nemotron-H model directory (with its tokenizer)")
    _tune_args(p, steps=100, lr=2e-3)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--targets", nargs="+", default=None, help="Linear names (default: q/k/v/o_proj in_proj "
                   "up_proj down_proj; out_proj and lm_head also allowed, but peft refuses Mamba out_proj)")
    p.add_argument("--merge", action="store_true", help="also write the merged plain model to OUT/model")
    p.set_defaults(func=cmd_lora)


def cmd_lora(args: argparse.Namespace) -> int:
    from hytron.tune import LoRAConfig
    from hytron.tune.customize import lora_job
    from hytron.tune.lora import DEFAULT_TARGETS

    lora = LoRAConfig(r=args.r, alpha=args.alpha, dropout=args.dropout, targets=args.targets or list(DEFAULT_TARGETS))
    result = lora_job(args.model, args.data, args.out, _tune_config(args, "lora"), lora, merge=args.merge)
    print(json.dumps(result, indent=2))
    return 0


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="fold a LoRA adapter into its base model: a plain Nemotron-H directory")
    p.add_argument("model", help="base Nemotron-H model directory")
    p.add_argument("adapter", help="PEFT LoRA adapter directory (written by hytron lora or by peft)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from hytron.tune.customize import merge_job

    print(f"merged {args.adapter} into {args.model}: {merge_job(args.model, args.adapter, args.out)}")
    return 0


def add_distill(sub) -> None:
    p = sub.add_parser("distill", help="train a student on a teacher's top-k logits (forward KL, temperature)")
    p.add_argument("--teacher", required=True, help="teacher Nemotron-H model directory")
    p.add_argument("--student", required=True, help="student model directory (same tokenizer), e.g. a pruned one")
    _tune_args(p, steps=200, lr=1e-3)
    p.add_argument("--topk", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--alpha", type=float, default=1.0, help="share of the KD loss (rest: cross-entropy on the data)")
    p.set_defaults(func=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> int:
    from hytron.tune.customize import distill_job

    cfg = _tune_config(args, "distill", kd_topk=args.topk, kd_temperature=args.temperature, kd_alpha=args.alpha)
    print(json.dumps(distill_job(args.teacher, args.student, args.data, args.out, cfg), indent=2))
    return 0


def add_prune(sub) -> None:
    p = sub.add_parser("prune", help="Minitron-style pruning to a parameter target (then distil to recover)",
                       description="Scores hidden channels, MLP neurons, Mamba heads and blocks by their "
                                   "activations on calibration batches, searches depth/width plans that land on "
                                   "--target-params, keeps the one with the lowest calibration loss, and writes "
                                   "OUT/model (and OUT/prune.json). --distill-steps then distils it from MODEL.")
    p.add_argument("model", help="Nemotron-H model directory (with its tokenizer)")
    p.add_argument("--target-params", required=True, type=float, help="total parameters wanted, e.g. 3.8e6")
    p.add_argument("--data", required=True, help="packed-data directory: calibration (and distillation) text")
    p.add_argument("--out", required=True)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--candidates", type=int, default=16, help="plans evaluated by calibration loss")
    p.add_argument("--distill-steps", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    _device_args(p)
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    import torch

    from hytron.tune.customize import prune_job

    if args.threads:  # calibration and the plan search run before the distillation run sets its own
        torch.set_num_threads(args.threads)
    cfg = _tune_config(args, "prune-distill", steps=max(1, args.distill_steps))
    report = prune_job(args.model, args.data, args.out, int(args.target_params), calib_batches=args.calib_batches,
                       candidates=args.candidates, distill=cfg if args.distill_steps else None,
                       seq_len=args.seq_len, batch_size=args.batch_size)
    print(json.dumps({k: v for k, v in report.items() if k != "candidates"}, indent=2))
    return 0


def add_customize(sub) -> None:
    p = sub.add_parser("customize", description=CUSTOMIZE,
                       help="your documents -> continued pre-training or LoRA -> (SFT) -> eval -> cards")
    p.add_argument("recipe", help="a recipe file, or a named recipe shipped with hytron (e.g. customize)")
    add_set(p)
    p.set_defaults(func=cmd_customize)


def cmd_customize(args: argparse.Namespace) -> int:
    from hytron.config import load_recipe
    from hytron.tune.customize import run_customize
    from hytron.tune.recipe import CustomizeConfig

    result = run_customize(load_recipe(CustomizeConfig, args.recipe, args.overrides))
    print(json.dumps({k: result[k] for k in ("model_dir", "before", "after", "forgetting", "mtp_acceptance")
                      if k in result}, indent=2))
    return 0
