"""Customization verbs: `hytron lora`, `merge`, `distill`, `prune` and `customize RECIPE` (the enterprise path).

`customize` runs, each stage skipped when its output is complete: curate your documents → pack them with a
replay share of general data (with the base model's tokenizer) → evaluate the base model → continued
pre-training (`hytron.train.pretrain`, all weights) or LoRA (`hytron.tune`, merged afterwards) → SFT with
reasoning when the recipe has an `sft` section → evaluate again → model and data cards.

    OUT/curated/  OUT/packed/  OUT/train/ (pretrain run) or OUT/lora/{adapter,model}/  OUT/sft/
    OUT/customize.json   before/after: loss on held-out own documents and on replay data (forgetting), probes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _say(msg: str) -> None:
    print(f"[customize] {msg}", file=sys.stderr, flush=True)


def _threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


# ---- data for the short loops ---------------------------------------------------------------------------------
def _chat_examples(tokenizer, path: Path, seq_len: int) -> list:
    try:  # the reasoning-aware row encoder (reasoning on/off rows), when hytron.reasoning is installed
        from hytron.reasoning.data import encode_row, read_chat_jsonl

        rows = read_chat_jsonl(path)
        encoded = [encode_row(tokenizer, r) for r in rows]
    except ImportError:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        encoded = [tokenizer.render_chat(r["messages"]) for r in rows]
    examples = [(ids, mask) for ids, mask in encoded if len(ids) <= seq_len and any(mask[1:])]
    if not examples:
        raise ValueError(f"{path}: no chat rows with assistant tokens fit in seq_len={seq_len}")
    return examples


def _data(path: str, tokenizer, seq_len: int, batch_size: int, seed: int, eval_batches: int):
    """(training batch iterator, fixed eval batches) from a packed-data directory or a chat JSONL file."""
    from hytron.tune import chat_batches, packed_batches, packed_eval_batches
    from hytron.tune.finetune import collate

    p = Path(path)
    if p.is_dir():
        return (packed_batches(p, seq_len, batch_size, seed),
                packed_eval_batches(p, seq_len, batch_size, eval_batches))
    if p.suffix in (".jsonl", ".json") and p.is_file():
        examples = _chat_examples(tokenizer, p, seq_len)
        held = examples[: max(1, min(len(examples) // 10, eval_batches * batch_size))]
        train = examples[len(held):] or examples
        evals = [collate(held[i:i + batch_size], tokenizer.pad_id) for i in range(0, len(held), batch_size)]
        return chat_batches(train, batch_size, tokenizer.pad_id, seed), evals
    raise FileNotFoundError(f"--data {path}: not a packed-data directory (hytron tokenize) nor a chat .jsonl file")


def _tune_args(p: argparse.ArgumentParser, steps: int = 100, lr: float = 1e-3) -> None:
    p.add_argument("--data", required=True, help="packed-data directory (hytron tokenize) or chat .jsonl rows")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def _tune_config(args, **extra):
    from hytron.tune import TuneConfig

    return TuneConfig(steps=args.steps, lr=args.lr, seq_len=args.seq_len, batch_size=args.batch_size,
                      seed=args.seed, warmup_steps=max(1, args.steps // 20), **extra)


# ---- lora / merge ---------------------------------------------------------------------------------------------
def add_lora(sub) -> None:
    p = sub.add_parser("lora", help="train LoRA adapters on a model (PEFT format), optionally merged",
                       description="Freezes MODEL, trains low-rank adapters on its Linears (attention, Mamba "
                                   "in_proj, MLP by default), writes OUT/adapter (peft loads it onto "
                                   "transformers' NemotronHForCausalLM) and, with --merge, OUT/model.")
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
    from hytron.model import HybridLM
    from hytron.tokenizer import Tokenizer
    from hytron.tune import LoRAConfig, apply_lora, finetune, merge_lora, save_adapter
    from hytron.tune.lora import DEFAULT_TARGETS, PEFT_REFUSES

    _threads(args.threads)
    out = Path(args.out)
    lora = LoRAConfig(r=args.r, alpha=args.alpha, dropout=args.dropout, targets=args.targets or list(DEFAULT_TARGETS))
    tok = Tokenizer.load(args.model)
    model = HybridLM.from_pretrained(args.model)
    apply_lora(model, lora)
    batches, evals = _data(args.data, tok, args.seq_len, args.batch_size, args.seed, args.eval_batches)
    out.mkdir(parents=True, exist_ok=True)
    result = finetune(model, batches, _tune_config(args), eval_batches=evals, metrics_path=out / "metrics.jsonl")
    save_adapter(model, out / "adapter", lora, base_model=str(Path(args.model).resolve()))
    result["adapter"] = str(out / "adapter")
    if set(lora.targets) & set(PEFT_REFUSES):
        _say("note: peft refuses LoRA on Mamba out_proj for nemotron_h; use the merged model with transformers")
    if args.merge:
        merge_lora(model).save_pretrained(out / "model", tokenizer=tok)
        result["model_dir"] = str(out / "model")
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="fold a LoRA adapter into its base model: a plain Nemotron-H directory")
    p.add_argument("model", help="base Nemotron-H model directory")
    p.add_argument("adapter", help="PEFT LoRA adapter directory (written by hytron lora or by peft)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from hytron.model import HybridLM
    from hytron.tokenizer import Tokenizer
    from hytron.tune import load_adapter, merge_lora

    model = HybridLM.from_pretrained(args.model)
    load_adapter(model, args.adapter)
    tok = Tokenizer.load(args.model) if (Path(args.model) / "tokenizer.json").is_file() else None
    path = merge_lora(model).save_pretrained(args.out, tokenizer=tok)
    print(f"merged {args.adapter} into {args.model}: {path}")
    return 0


# ---- distill --------------------------------------------------------------------------------------------------
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
    from hytron.model import HybridLM
    from hytron.tokenizer import Tokenizer
    from hytron.tune import finetune

    _threads(args.threads)
    out = Path(args.out)
    tok = Tokenizer.load(args.teacher)
    teacher, student = HybridLM.from_pretrained(args.teacher), HybridLM.from_pretrained(args.student)
    batches, evals = _data(args.data, tok, args.seq_len, args.batch_size, args.seed, args.eval_batches)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _tune_config(args, kd_topk=args.topk, kd_temperature=args.temperature, kd_alpha=args.alpha)
    result = finetune(student, batches, cfg, teacher=teacher, eval_batches=evals, metrics_path=out / "metrics.jsonl")
    student.save_pretrained(out / "model", tokenizer=tok)
    result["model_dir"] = str(out / "model")
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


# ---- prune ----------------------------------------------------------------------------------------------------
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
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from hytron.model import HybridLM
    from hytron.packing import iter_eval_batches
    from hytron.tokenizer import Tokenizer
    from hytron.tune import TuneConfig, finetune, packed_batches, packed_eval_batches
    from hytron.tune.importance import estimate_importance
    from hytron.tune.prune import prune_model, search_plan

    _threads(args.threads)
    out = Path(args.out)
    model = HybridLM.from_pretrained(args.model).eval()
    calib = list(iter_eval_batches(args.data, args.seq_len, args.batch_size, split="train",
                                   max_batches=args.calib_batches))
    t0 = time.perf_counter()
    importance = estimate_importance(model, calib)
    plan, table = search_plan(model, importance, int(args.target_params), calib, max_candidates=args.candidates)
    pruned = prune_model(model, importance, plan)
    report = {"model": args.model, "params_before": model.num_params(), "params_after": pruned.num_params(),
              "target_params": int(args.target_params), "plan": plan.to_dict(), "calib_loss_before":
              importance.base_loss, "block_importance": importance.layers.tolist(), "candidates": table,
              "seconds": round(time.perf_counter() - t0, 1)}
    _say(f"pruned {model.num_params():,} -> {pruned.num_params():,} params: {plan}")
    if args.distill_steps:
        cfg = TuneConfig(steps=args.distill_steps, lr=args.lr, seq_len=args.seq_len, batch_size=args.batch_size,
                         warmup_steps=max(1, args.distill_steps // 20))
        out.mkdir(parents=True, exist_ok=True)
        report["distill"] = finetune(pruned, packed_batches(args.data, args.seq_len, args.batch_size), cfg,
                                     teacher=model, metrics_path=out / "metrics.jsonl",
                                     eval_batches=packed_eval_batches(args.data, args.seq_len, args.batch_size))
    tok = Tokenizer.load(args.model) if (Path(args.model) / "tokenizer.json").is_file() else None
    pruned.save_pretrained(out / "model", tokenizer=tok)
    (out / "prune.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "candidates"}, indent=2))
    return 0


# ---- customize ------------------------------------------------------------------------------------------------
def add_customize(sub) -> None:
    p = sub.add_parser("customize", help="your documents -> continued pre-training or LoRA -> (SFT) -> eval -> cards",
                       description="Runs a customize recipe (see recipes/customize.yaml); re-running skips "
                                   "finished stages.")
    p.add_argument("recipe", help="a recipe file, or a name under recipes/ (e.g. customize)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set train.steps=50 (repeatable)")
    p.set_defaults(func=cmd_customize)


def cmd_customize(args: argparse.Namespace) -> int:
    import yaml

    from hytron.tune.recipe import load_customize

    overrides = {}
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=50")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    result = run_customize(load_customize(args.recipe, overrides))
    print(json.dumps({k: result[k] for k in ("model_dir", "before", "after", "forgetting")}, indent=2))
    return 0


def _evaluate(model_dir: Path, tokenizer, packed: Path, cfg) -> dict:
    """Held-out loss on each blend component (own documents, replay) and the probes, for one model."""
    from hytron.model import HybridLM
    from hytron.packing import PackedData
    from hytron.tune import evaluate, packed_eval_batches
    from hytron.tune.probes import score_probes

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
        try:
            from hytron.eval import evaluate_model
        except ImportError:
            _say("eval_harness: hytron.eval is not installed; skipped")
        else:
            tasks.update(evaluate_model(model_dir, write=False).get("tasks", {}))
    return tasks


def run_customize(cfg) -> dict:
    """Every stage of a customize recipe, top to bottom; returns (and writes) OUT/customize.json."""
    from hytron.config import from_dict, save_resolved
    from hytron.data.mix import Blend, Component
    from hytron.packing import pack
    from hytron.tokenizer import Tokenizer

    _threads(cfg.threads)
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
    if not (out / "curated" / "manifest.json").is_file():
        from hytron.data.curate_config import load_curate_config
        from hytron.data.pipeline import curate

        curate([str(p) for p in cfg.data.inputs], out / "curated",
               load_curate_config(cfg.data.curate_config, {}, default_profile="documents"))
    manifest = json.loads((out / "curated" / "manifest.json").read_text())
    counts = manifest.get("counts", {})
    from hytron.data.summary import removal_summary

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
        from hytron.train.pretrain import pretrain
        from hytron.train.recipe import TrainConfig

        train_cfg = from_dict(TrainConfig, {
            "name": cfg.name, "out_dir": str(out / "train"), "steps": t.steps, "seed": cfg.seed, "log_every": 10,
            "eval_every": 0, "eval_batches": t.eval_batches, "checkpoint_every": max(1, t.steps // 4),
            "threads": cfg.threads, "model": {"init_from": str(base)},
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
        try:
            from hytron.train.sft import SFTConfig, sft
        except ImportError as e:
            raise ValueError(f"recipe has an sft section but hytron.train.sft is unavailable ({e})") from None
        sft_cfg = from_dict(SFTConfig, {"name": f"{cfg.name}-sft", "out_dir": str(out / "sft"), "seed": cfg.seed,
                                        "threads": cfg.threads, **cfg.sft, "model": {"init_from": str(model_dir)}})
        summary = sft(sft_cfg)
        model_dir, run_dir = Path(summary.get("model_dir") or out / "sft" / "model"), out / "sft"
        timings["sft"] = round(time.perf_counter() - t0, 1)

    _say("6/6 evaluating the customized model and writing its cards")
    after = _evaluate(model_dir, tok, out / "packed", cfg)
    from hytron.train.cards import write_cards

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
    (out / "customize.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _lora_stage(cfg, base: Path, tok, out: Path) -> Path:
    """LoRA on the packed blend; writes OUT/lora/adapter (PEFT) and the merged OUT/lora/model."""
    from hytron.model import HybridLM
    from hytron.tune import TuneConfig, apply_lora, finetune, merge_lora, packed_batches, save_adapter

    model_dir = out / "lora" / "model"
    if (model_dir / "config.json").is_file():
        return model_dir
    t = cfg.train
    model = HybridLM.from_pretrained(base)
    apply_lora(model, cfg.lora)
    (out / "lora").mkdir(parents=True, exist_ok=True)
    tune = TuneConfig(steps=t.steps, lr=t.lr, warmup_steps=t.warmup_steps, seq_len=t.seq_len,
                      batch_size=t.batch_size, seed=cfg.seed)
    result = finetune(model, packed_batches(out / "packed", t.seq_len, t.batch_size, cfg.seed), tune,
                      metrics_path=out / "lora" / "metrics.jsonl")
    save_adapter(model, out / "lora" / "adapter", cfg.lora, base_model=str(base.resolve()))
    merge_lora(model).save_pretrained(model_dir, tokenizer=tok)
    (out / "lora" / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return model_dir
