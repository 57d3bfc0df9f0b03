"""Customization pipelines on model directories: `customize RECIPE` (the enterprise path) and the one-stage jobs
behind `hytron lora`, `merge`, `distill` and `prune`.

`run_customize` runs, each stage skipped when its output is complete: curate your documents → pack them with a
replay share of general data (with the base model's tokenizer) → evaluate the base model → continued
pre-training (`hytron.train.pretrain`, all weights) or LoRA (`finetune`, merged afterwards) → SFT with
reasoning when the recipe has an `sft` section → evaluate again → model and data cards.

    OUT/curated/  OUT/packed/  OUT/train/ (pretrain run) or OUT/lora/{adapter,model}/  OUT/sft/
    OUT/customize.json   before/after: loss on held-out own documents and on replay data (forgetting), probes

A pipeline, like the quickstart: it composes the stages (curation, training, tuning, evaluation, cards).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from hytron.config import from_dict, save_resolved
from hytron.data.chat import read_chat_jsonl
from hytron.data.io import write_json
from hytron.data.mix import Blend, Component
from hytron.data.summary import removal_summary
from hytron.eval import evaluate_model
from hytron.model import HybridLM
from hytron.packing import PackedData, iter_eval_batches, pack
from hytron.report.cards import write_cards
from hytron.tokenizer import Tokenizer
from hytron.train import mtp as mtp_head
from hytron.train.batches import collate, encode_rows
from hytron.train.pretrain import pretrain
from hytron.train.recipe import TrainConfig
from hytron.train.sft import sft
from hytron.tune.finetune import (
    TuneConfig,
    chat_batches,
    evaluate,
    finetune,
    packed_batches,
    packed_eval_batches,
    tune_device,
)
from hytron.tune.importance import estimate_importance
from hytron.tune.lora import (
    PEFT_REFUSES,
    LoRAConfig,
    apply_lora,
    format_coverage,
    load_adapter,
    lora_coverage,
    merge_lora,
    save_adapter,
)
from hytron.tune.mtp_refresh import distill_mtp_head, load_head, refresh_after_lora, save_head
from hytron.tune.probes import score_probes
from hytron.tune.prune import prune_model, search_plan


def _say(msg: str) -> None:
    print(f"[customize] {msg}", file=sys.stderr, flush=True)


def _evaluate(model_dir: Path, tokenizer, packed: Path, cfg) -> dict:
    """Held-out loss on each blend component (own documents, replay) and the probes, for one model."""
    model = HybridLM.from_pretrained(model_dir).eval()
    t = cfg.train
    tasks: dict = {}
    for comp in PackedData(packed).components("val"):
        try:
            batches = packed_eval_batches(packed, t.seq_len, t.batch_size, t.eval_batches, component=comp)
        except ValueError:  # too few held-out tokens for one window
            batches = packed_eval_batches(packed, 32, t.batch_size, t.eval_batches, component=comp)
        tasks[f"heldout_{comp}"] = evaluate(model, batches)
    if cfg.probes:
        tasks["probes"] = score_probes(model, tokenizer, cfg.probes)
    if cfg.eval_harness:
        tasks.update(evaluate_model(model_dir, write=False).get("tasks", {}))
    if model.mtp is not None:  # kept out of the cards' tasks: customize.json's "mtp_acceptance"
        tasks["mtp_acceptance"] = mtp_head.acceptance(model, mtp_head.heldout_prompts(
            packed_eval_batches(packed, 2 * mtp_head.PROMPT_LEN, mtp_head.ACCEPT_PROMPTS, 1)))
    return tasks


def run_customize(cfg) -> dict:
    """Every stage of a customize recipe, top to bottom; returns (and writes) OUT/customize.json."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out / "config.json")
    base = Path(cfg.base_model)
    if not (base / "tokenizer.json").is_file():
        raise FileNotFoundError(f"base_model {base}: no tokenizer.json; customize packs your documents with the "
                                "base model's own tokenizer")
    tok = Tokenizer.load(base)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    _say("1/6 curating your documents")
    if not (out / "curated" / "manifest.json").is_file():  # curation imports the `curate` extra: only when needed
        from hytron.data.curate_config import load_curate_config
        from hytron.data.pipeline import curate

        curate([str(p) for p in cfg.data.inputs], out / "curated",
               load_curate_config(cfg.data.curate_config, {}, default_profile="documents"))
    manifest = json.loads((out / "curated" / "manifest.json").read_text())
    counts = manifest.get("counts", {})
    for line in removal_summary(manifest, out / "curated"):
        _say(line)
    if not counts.get("kept"):
        raise ValueError(f"curation kept none of your {counts.get('input', 0)} documents; see why in "
                         f"{out / 'curated' / 'removed'} (removal_reason), and loosen data.curate_config if needed")
    timings["curate"] = round(time.perf_counter() - t0, 1)

    _say(f"2/6 packing with {cfg.data.replay_share:.0%} replay of general data")
    if not (out / "packed" / "index.json").is_file():
        comps = [Component(name="own", weight=1 - cfg.data.replay_share, inputs=[str(out / "curated")])]
        if cfg.data.replay_share > 0:
            comps.append(Component(name="replay", weight=cfg.data.replay_share, inputs=list(cfg.data.replay)))
        blend = Blend(components=comps, name=cfg.name, validation_fraction=cfg.data.validation_fraction,
                      seed=cfg.seed)
        pack(blend, tok, out / "packed")
    timings["pack"] = round(time.perf_counter() - t0, 1)

    _say("3/6 evaluating the base model")
    before = _evaluate(base, tok, out / "packed", cfg)

    t = cfg.train
    if cfg.method == "pretrain":
        _say(f"4/6 continued pre-training for {t.steps} steps")
        train_cfg = from_dict(TrainConfig, {
            "name": cfg.name, "out_dir": str(out / "train"), "steps": t.steps, "seed": cfg.seed, "log_every": 10,
            "eval_every": 0, "eval_batches": t.eval_batches, "checkpoint_every": max(1, t.steps // 4),
            "threads": cfg.threads, "model": {"init_from": str(base), "mtp": {"refresh": cfg.mtp_refresh}},
            "data": {"path": str(out / "packed"), "seq_len": t.seq_len, "batch_size": t.batch_size},
            "optim": {"lr": t.lr, "warmup_steps": t.warmup_steps, "schedule": "cosine", "weight_decay": 0.0}})
        summary = pretrain(train_cfg)
        model_dir, run_dir = Path(summary.get("model_dir") or out / "train" / "model"), out / "train"
    else:
        _say(f"4/6 LoRA r={cfg.lora.r} for {t.steps} steps")
        model_dir, run_dir = _lora_stage(cfg, base, tok, out), None
    timings["train"] = round(time.perf_counter() - t0, 1)

    if cfg.sft is not None:
        _say("5/6 SFT with reasoning")
        sft_cfg = replace(cfg.sft, name=f"{cfg.name}-sft", out_dir=str(out / "sft"), seed=cfg.seed,
                          threads=cfg.threads, model=replace(cfg.sft.model, init_from=str(model_dir),
                                                             mtp=replace(cfg.sft.model.mtp, refresh=cfg.mtp_refresh)))
        summary = sft(sft_cfg)
        model_dir, run_dir = Path(summary.get("model_dir") or out / "sft" / "model"), out / "sft"
        timings["sft"] = round(time.perf_counter() - t0, 1)

    _say("6/6 evaluating the customized model and writing its cards")
    after = _evaluate(model_dir, tok, out / "packed", cfg)
    # the MTP head's acceptance length (the head kept fresh unless mtp_refresh is false), beside the cards' tasks
    mtp = (mtp_head.report(before.pop("mtp_acceptance"), after.pop("mtp_acceptance", None), "customize")
           if "mtp_acceptance" in before else None)
    evals = {"tasks": after, "before_customization": before}
    try:
        write_cards(model_dir, run_dir, evals=evals)
    except (KeyError, ValueError) as e:  # a run directory the card writer cannot read (e.g. SFT metrics)
        _say(f"cards: could not read the run facts of {run_dir} ({e!r}); writing the cards without them")
        write_cards(model_dir, None, evals=evals)
    timings["eval"] = round(time.perf_counter() - t0, 1)
    forgetting = {}
    if "heldout_replay" in before and "heldout_replay" in after:
        forgetting = {"replay_val_loss_before": before["heldout_replay"]["val_loss"],
                      "replay_val_loss_after": after["heldout_replay"]["val_loss"],
                      "increase": after["heldout_replay"]["val_loss"] - before["heldout_replay"]["val_loss"]}
    result = {"name": cfg.name, "method": cfg.method, "base_model": str(base), "model_dir": str(model_dir),
              "before": before, "after": after, "forgetting": forgetting, "seconds": timings}
    if mtp is not None:
        result["mtp_acceptance"] = mtp
    write_json(out / "customize.json", result)
    return result


def _lora_stage(cfg, base: Path, tok, out: Path) -> Path:
    """LoRA on the packed blend; writes OUT/lora/adapter (PEFT) and the merged OUT/lora/model."""
    model_dir = out / "lora" / "model"
    if (model_dir / "config.json").is_file():
        return model_dir
    t = cfg.train
    tune = from_dict(TuneConfig, {
        "name": f"{cfg.name}-lora", "out_dir": str(out / "lora"), "steps": t.steps, "seed": cfg.seed,
        "threads": cfg.threads, "data": {"seq_len": t.seq_len, "batch_size": t.batch_size},
        "optim": {"lr": t.lr, "warmup_steps": t.warmup_steps, "schedule": "cosine", "weight_decay": 0.0}})
    model = HybridLM.from_pretrained(base, dtype=tune.weights_dtype(tune_device(tune)))
    apply_lora(model, cfg.lora)
    _say(format_coverage(coverage := lora_coverage(model)))
    (out / "lora").mkdir(parents=True, exist_ok=True)
    write_json(out / "lora" / "coverage.json", coverage)
    finetune(model, batches := packed_batches(out / "packed", t.seq_len, t.batch_size, cfg.seed), tune)
    save_adapter(model, out / "lora" / "adapter", cfg.lora, base_model=str(base.resolve()))
    if model.mtp is not None and cfg.mtp_refresh:
        distill_mtp_head(model, batches, tune)  # the MTP head kept fresh (hytron.tune.mtp_refresh)
        save_head(model, out / "lora" / "adapter")
    merge_lora(model).save_pretrained(model_dir, tokenizer=tok)
    return model_dir


# ---- one-stage jobs (the `lora`, `merge`, `distill` and `prune` verbs) ------------------------------------------
def tune_data(path: str | Path, tokenizer, tune: TuneConfig):
    """(resumable training batches, fixed eval batches) from a packed-data directory or a chat JSONL file, the
    training batches shared out over the ranks of a torchrun job (`tune.data`: seq_len, batch_size; the
    first `tune.eval_batches` batches of held-out data are the fixed evaluation set)."""
    p, d = Path(path), tune.data
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if p.is_dir():
        return (packed_batches(p, d.seq_len, d.batch_size, tune.seed, rank=rank, world_size=world),
                packed_eval_batches(p, d.seq_len, d.batch_size, tune.eval_batches))
    if p.suffix not in (".jsonl", ".json") or not p.is_file():
        raise FileNotFoundError(f"--data {path}: not a packed-data directory (hytron tokenize) nor a chat .jsonl file")
    examples, _ = encode_rows(tokenizer, read_chat_jsonl(p), d.seq_len)
    if not examples:
        raise ValueError(f"{p}: no chat rows with assistant tokens fit in seq_len={d.seq_len}")
    held = examples[: max(1, min(len(examples) // 10, tune.eval_batches * d.batch_size))]
    train = examples[len(held):] or examples
    evals = [collate(held[i:i + d.batch_size], tokenizer.pad_id) for i in range(0, len(held), d.batch_size)]
    return chat_batches(train, d.batch_size, tokenizer.pad_id, tune.seed, rank=rank, world_size=world), evals


def lora_job(model_dir: str | Path, data: str | Path, out: str | Path, tune: TuneConfig, lora: LoRAConfig, *,
             merge: bool = False) -> dict:
    """LoRA adapters trained on `data`: OUT/adapter (PEFT format) and, with `merge`, the plain OUT/model."""
    out = Path(out)
    tok = Tokenizer.load(model_dir)
    model = HybridLM.from_pretrained(model_dir, dtype=tune.weights_dtype(tune_device(tune)))
    apply_lora(model, lora)
    coverage = lora_coverage(model)
    _say(format_coverage(coverage))
    batches, evals = tune_data(data, tok, tune)
    single = int(os.environ.get("WORLD_SIZE", "1")) == 1  # acceptance is measured by one process decoding alone
    prompts = mtp_head.heldout_prompts(evals) if model.mtp is not None and single else []
    before = mtp_head.acceptance(model, prompts)
    result = finetune(model, batches, tune, eval_batches=evals)
    result.update(refresh_after_lora(model, batches, tune, prompts, before))  # the MTP head kept fresh
    result["coverage"] = coverage
    result["adapter"] = str(save_adapter(model, out / "adapter", lora, base_model=str(Path(model_dir).resolve())))
    if result.get("mtp_refresh"):
        save_head(model, out / "adapter")  # the refreshed head beside the adapter (`hytron merge` applies it)
    if set(lora.targets) & set(PEFT_REFUSES):
        _say("note: peft refuses LoRA on Mamba out_proj for nemotron_h; use the merged model with transformers")
    if merge:
        result["model_dir"] = str(merge_lora(model).save_pretrained(out / "model", tokenizer=tok))
    write_json(out / "summary.json", result)
    return result


def merge_job(model_dir: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """Fold a PEFT LoRA adapter into its base model: a plain Nemotron-H directory at `out`."""
    model = HybridLM.from_pretrained(model_dir)
    load_adapter(model, adapter)
    load_head(model, adapter)  # an MTP head refreshed for these adapters (hytron lora), when the adapter has one
    tok = Tokenizer.load(model_dir) if (Path(model_dir) / "tokenizer.json").is_file() else None
    return merge_lora(model).save_pretrained(out, tokenizer=tok)


def distill_job(teacher_dir: str | Path, student_dir: str | Path, data: str | Path, out: str | Path,
                tune: TuneConfig) -> dict:
    """The student trained on the teacher's top-k logits over `data`; writes OUT/model."""
    out = Path(out)
    tok = Tokenizer.load(teacher_dir)
    teacher = HybridLM.from_pretrained(teacher_dir, dtype=tune.weights_dtype(tune_device(tune)))
    student = HybridLM.from_pretrained(student_dir)  # trained: fp32 master weights
    batches, evals = tune_data(data, tok, tune)
    result = finetune(student, batches, tune, teacher=teacher, eval_batches=evals)
    result["model_dir"] = str(student.save_pretrained(out / "model", tokenizer=tok))
    write_json(out / "summary.json", result)
    return result


def prune_job(model_dir: str | Path, data: str | Path, out: str | Path, target_params: int, *,
              calib_batches: int = 8, candidates: int = 16, distill: TuneConfig | None = None, seq_len: int = 256,
              batch_size: int = 8) -> dict:
    """Minitron-style pruning to `target_params` (then, with `distill`, distillation from the original);
    writes OUT/model and OUT/prune.json."""
    out = Path(out)
    model = HybridLM.from_pretrained(model_dir).eval()
    calib = list(iter_eval_batches(data, seq_len, batch_size, split="train", max_batches=calib_batches))
    t0 = time.perf_counter()
    importance = estimate_importance(model, calib)
    plan, table = search_plan(model, importance, int(target_params), calib, max_candidates=candidates)
    pruned = prune_model(model, importance, plan)
    report = {"model": str(model_dir), "params_before": model.num_params(), "params_after": pruned.num_params(),
              "target_params": int(target_params), "plan": plan.to_dict(), "calib_loss_before": importance.base_loss,
              "block_importance": importance.layers.tolist(), "candidates": table,
              "seconds": round(time.perf_counter() - t0, 1)}
    _say(f"pruned {model.num_params():,} -> {pruned.num_params():,} params: {plan}")
    if distill is not None:
        report["distill"] = finetune(pruned, packed_batches(data, seq_len, batch_size), distill, teacher=model,
                                     eval_batches=packed_eval_batches(data, seq_len, batch_size))
    tok = Tokenizer.load(model_dir) if (Path(model_dir) / "tokenizer.json").is_file() else None
    pruned.save_pretrained(out / "model", tokenizer=tok)
    write_json(out / "prune.json", report)
    return report
