"""Benchmark: Minitron-style prune + distil vs the unpruned model vs the same size trained from scratch.

Pipeline (the quickstart's stages, smaller): TinyWeb -> curate -> BPE -> packed blend -> pre-train a teacher.
Then `hytron.tune`: activation importance on calibration batches, a plan search for ~70% of the teacher's
parameters (depth, hidden, MLP, Mamba heads), pruning, and distillation from the teacher (forward KL on its
top-k logits) for D steps. Baselines with the same D steps x batch x seq tokens and the same loop:
(a) the pruned architecture from a fresh random init, cross-entropy ("from scratch, same tokens");
(b) the pruned model fine-tuned with cross-entropy only (pruning without distillation).
Reported: validation loss on the same held-out batches, and TinyWeb QA accuracy (`hytron.eval`, when
installed). The Minitron claim: pruning + distillation beats training the small model from scratch on the
same tokens. The teacher's own pre-training tokens are listed too: the pruned model inherits them.

    python bench/bench_prune.py [--docs 4000] [--preset hytron-tiny] [--teacher-steps 600] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hytron.model import HybridLM
from hytron.packing import iter_eval_batches
from hytron.pipelines.quickstart import curate_docs, make_tinyweb, pack_blend, train_config, train_tokenizer
from hytron.train.pretrain import pretrain
from hytron.train.recipe import DataSpec, OptimSpec
from hytron.tune import TuneConfig, evaluate, finetune, packed_batches, packed_eval_batches
from hytron.tune.importance import estimate_importance
from hytron.tune.prune import prune_model, search_plan


def qa_accuracy(model_dir: Path, tinyweb: Path, limit: int) -> dict:
    """TinyWeb world-QA and arithmetic accuracy from hytron.eval, or {} when it is not installed."""
    try:
        from hytron.eval import evaluate_model
    except ImportError:
        return {}
    tasks = evaluate_model(model_dir, evals=tinyweb, tasks=("world_qa", "arithmetic"), limit=limit,
                           write=False).get("tasks", {})
    return {f"{t}_{k}": v for t, res in tasks.items() for k, v in res.items()
            if isinstance(v, float) and ("acc" in k)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_prune")
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--preset", default="hytron-tiny")
    ap.add_argument("--teacher-steps", type=int, default=600)
    ap.add_argument("--steps", type=int, default=200, help="distillation steps (= scratch / CE-only steps)")
    ap.add_argument("--prune-to", type=float, default=0.7, help="target share of the teacher's parameters")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--teacher-lr", type=float, default=3e-3)
    ap.add_argument("--lr", type=float, default=1e-3, help="LR for distilling / fine-tuning the pruned model")
    ap.add_argument("--scratch-lr", type=float, default=3e-3, help="LR for the from-scratch baseline")
    ap.add_argument("--topk", type=int, default=64)
    ap.add_argument("--qa-limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # ---- data and teacher (the quickstart's stages) --------------------------------------------------------
    tinyweb = make_tinyweb(out / "tinyweb", args.docs, args.seed)
    curate_docs([tinyweb], out / "curated", workers=1)
    tok = train_tokenizer(out / "curated", out / "tokenizer", args.vocab)
    pack_blend("blend-quickstart", out / "curated", tok, out / "packed")
    packed = out / "packed"
    s = {"steps": args.teacher_steps, "preset": args.preset, "seq_len": args.seq_len, "batch_size": args.batch_size,
         "eval_every": 0, "checkpoint_every": 0, "lr": args.teacher_lr}
    t0 = time.perf_counter()
    pretrain(train_config(out / "teacher", packed, s, args.seed, args.threads), progress=False)
    teacher_s = time.perf_counter() - t0
    teacher_dir = out / "teacher" / "model"
    teacher = HybridLM.from_pretrained(teacher_dir).eval()
    val = packed_eval_batches(packed, args.seq_len, args.batch_size, max_batches=16)
    tokens_per_step = args.seq_len * args.batch_size

    # ---- prune ----------------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    calib = list(iter_eval_batches(packed, args.seq_len, args.batch_size, split="train", max_batches=8))
    imp = estimate_importance(teacher, calib)
    target = int(args.prune_to * teacher.num_params())
    plan, table = search_plan(teacher, imp, target, calib, max_candidates=16)
    prune_s = time.perf_counter() - t0
    print(f"teacher {teacher.num_params():,} params -> plan {plan} ({len(table)} candidates, {prune_s:.0f} s)")

    rows: dict[str, dict] = {}

    def record(name: str, model: HybridLM, extra: dict) -> None:
        model_dir = out / name
        model.save_pretrained(model_dir, tokenizer=tok)
        rows[name] = {"params": model.num_params(), **evaluate(model, val, teacher, args.topk),
                      **qa_accuracy(model_dir, tinyweb, args.qa_limit), **extra}
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[name].items()}
        print(f"{name:28s} {json.dumps(shown)}")

    record("teacher", teacher, {"train_tokens": args.teacher_steps * tokens_per_step})
    record("pruned_no_training", prune_model(teacher, imp, plan), {"train_tokens": 0})

    def tune_cfg(lr: float, run_dir: Path) -> TuneConfig:
        return TuneConfig(name=run_dir.name, out_dir=str(run_dir), steps=args.steps, seed=args.seed,
                          optim=OptimSpec(lr=lr, warmup_steps=max(1, args.steps // 20), schedule="cosine",
                                          weight_decay=0.0),
                          data=DataSpec(seq_len=args.seq_len, batch_size=args.batch_size), kd_topk=args.topk,
                          log_every=10)

    runs = {  # name: (initial model, teacher or None, lr)
        "pruned_distilled": (lambda: prune_model(teacher, imp, plan), teacher, args.lr),
        "pruned_ce_finetuned": (lambda: prune_model(teacher, imp, plan), None, args.lr),
        "scratch_same_size": (lambda: _fresh(plan.config(teacher.config), args.seed), None, args.scratch_lr),
    }
    for name, (make, kd_teacher, lr) in runs.items():
        model = make()
        t0 = time.perf_counter()
        finetune(model, packed_batches(packed, args.seq_len, args.batch_size, seed=args.seed + 1),
                 tune_cfg(lr, out / name), teacher=kd_teacher, progress=False)
        record(name, model, {"train_tokens": args.steps * tokens_per_step,
                             "seconds": round(time.perf_counter() - t0, 2)})

    summary = {"settings": vars(args), "plan": plan.to_dict(), "target_params": target, "candidates": table,
               "teacher_seconds": round(teacher_s, 1), "prune_seconds": round(prune_s, 1), "results": rows,
               "total_seconds": round(time.perf_counter() - t_start, 1)}
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    d, sc = rows["pruned_distilled"]["val_loss"], rows["scratch_same_size"]["val_loss"]
    print(f"wrote {out / 'result.json'} ({summary['total_seconds']:.0f} s)")
    print(f"val loss: teacher {rows['teacher']['val_loss']:.4f}, pruned+distilled {d:.4f}, "
          f"pruned+CE {rows['pruned_ce_finetuned']['val_loss']:.4f}, scratch {sc:.4f}")
    print(f"ratio val loss pruned+distilled / scratch (same tokens, {rows['scratch_same_size']['params']:,} "
          f"params): {d / sc:.3f}x")


def _fresh(config, seed: int) -> HybridLM:
    torch.manual_seed(seed)
    return HybridLM(config)


if __name__ == "__main__":
    main()
