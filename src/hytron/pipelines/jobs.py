"""The one-stage jobs behind `hytron lora`, `merge`, `distill` and `prune`: a recipe in, model directories out.

Each loads its models from directories (with their tokenizer), trains through `finetune` (checkpoints in
OUT_DIR/run, so re-running a stopped job resumes it) and writes its outputs and a JSON summary under
`cfg.out_dir`. `hytron customize` (`hytron.pipelines.customize`) runs `lora_job` as its LoRA stage.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from hytron.data.chat import read_chat_jsonl
from hytron.data.io import write_json
from hytron.model import HybridLM
from hytron.packing import iter_eval_batches
from hytron.tokenizer import Tokenizer
from hytron.train import mtp as mtp_head
from hytron.train.batches import collate, encode_rows
from hytron.train.loop import export_model
from hytron.tune.finetune import chat_batches, finetune, packed_batches, packed_eval_batches, tune_device
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
from hytron.tune.mtp_refresh import load_head, refresh_head, save_head
from hytron.tune.prune import prune_model, search_plan
from hytron.tune.recipe import DistillRecipe, LoRARecipe, PruneRecipe, TuneConfig


def _say(msg: str) -> None:
    print(f"[tune] {msg}", file=sys.stderr, flush=True)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _trained(model: HybridLM, state: dict, lora: LoRAConfig | None = None) -> HybridLM:
    """A single-process copy of a trained model from its full state dict (what rank 0 holds at the end of a run,
    distributed or not), the state's tensors taken as they are (dtypes kept: a bf16 base stays bf16)."""
    with torch.device("meta"):
        plain = HybridLM(model.config)
        if lora is not None:
            apply_lora(plain, lora)
    plain.load_state_dict({k: state[k] for k in plain.state_dict()}, assign=True)
    return plain.eval()


def _run(cfg: TuneConfig) -> TuneConfig:
    """The training run of a job: its checkpoints and metrics go to OUT_DIR/run."""
    return replace(cfg, out_dir=str(Path(cfg.out_dir) / "run"))


def tune_data(path: str | Path, tokenizer, tune: TuneConfig):
    """(resumable training batches, fixed eval batches) from a packed-data directory or a chat JSONL file, the
    training batches shared out over the ranks of a torchrun job (`tune.data`: seq_len, batch_size; the
    first `tune.eval_batches` batches of held-out data are the fixed evaluation set)."""
    p, d = Path(path), tune.data
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if p.is_dir():
        return (packed_batches(p, d.seq_len, d.batch_size, tune.seed, weights=d.weights, rank=rank, world_size=world),
                packed_eval_batches(p, d.seq_len, d.batch_size, tune.eval_batches))
    if p.suffix not in (".jsonl", ".json") or not p.is_file():
        raise FileNotFoundError(f"data.path {path}: not a packed-data directory (hytron tokenize) nor a chat .jsonl "
                                "file")
    examples, _ = encode_rows(tokenizer, read_chat_jsonl(p), d.seq_len)
    if not examples:
        raise ValueError(f"{p}: no chat rows with assistant tokens fit in data.seq_len={d.seq_len}")
    held = examples[: max(1, min(len(examples) // 10, tune.eval_batches * d.batch_size))]
    train = examples[len(held):] or examples
    evals = [collate(held[i:i + d.batch_size], tokenizer.pad_id) for i in range(0, len(held), d.batch_size)]
    return chat_batches(train, d.batch_size, tokenizer.pad_id, tune.seed, rank=rank, world_size=world), evals


def lora_job(cfg: LoRARecipe, progress: bool = True) -> dict:
    """LoRA adapters on `cfg.model.init_from` trained on `cfg.data.path`: OUT_DIR/adapter (PEFT format) and, with
    `cfg.merge`, the plain OUT_DIR/model; the coverage per layer kind is printed and kept in the summary."""
    out, base = Path(cfg.out_dir), Path(cfg.model.init_from)
    tok = Tokenizer.load(base)
    model = HybridLM.from_pretrained(base, dtype=cfg.weights_dtype(tune_device(cfg)))
    torch.manual_seed(cfg.seed)  # the adapters' initial A: the recipe's seed decides it, on every rank alike
    apply_lora(model, cfg.lora)
    coverage = lora_coverage(model)
    _say(format_coverage(coverage))
    batches, evals = tune_data(cfg.data.path, tok, cfg)
    prompts = mtp_head.heldout_prompts(evals) if model.mtp is not None else []
    before = mtp_head.acceptance(model, prompts) if _is_main() else None  # the head's drafts before the adapters
    trained: list[HybridLM] = []  # rank 0's single-process copy of the result, from the gathered state

    def keep(state: dict) -> Path:  # written below, after the run (the MTP refresh first)
        trained.append(_trained(model, state, cfg.lora))
        return out

    result = finetune(model, batches, _run(cfg), eval_batches=evals, progress=progress, export=keep)
    result.pop("model_dir", None)
    result.update(coverage=coverage, adapter=str(out / "adapter"))
    if not _is_main():
        return result
    if trained:  # (a run that had finished before wrote its outputs then)
        adapted = trained[0].to(next(model.parameters()).device)
        # the MTP head kept fresh, on rank 0 alone (the process group is gone): replace `distributed` so it runs
        result.update(refresh_head(adapted, batches, replace(cfg, distributed="none"), prompts, before))
        save_adapter(adapted, out / "adapter", cfg.lora, base_model=str(base.resolve()))
        if result.get("mtp_refresh"):
            save_head(adapted, out / "adapter")  # beside the adapter (peft skips mtp.*; `hytron merge` applies it)
        if cfg.merge:
            result["model_dir"] = str(merge_lora(adapted).save_pretrained(out / "model", tokenizer=tok))
    if set(cfg.lora.targets) & set(PEFT_REFUSES):
        _say("note: peft refuses LoRA on Mamba out_proj for nemotron_h; use the merged model with transformers")
    write_json(out / "summary.json", result)
    return result


def merge_job(model_dir: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """Fold a PEFT LoRA adapter into its base model: a plain Nemotron-H directory at `out`."""
    model = HybridLM.from_pretrained(model_dir)
    load_adapter(model, adapter)
    load_head(model, adapter)  # an MTP head refreshed for these adapters (hytron lora), when the adapter has one
    tok = Tokenizer.load(model_dir) if (Path(model_dir) / "tokenizer.json").is_file() else None
    return merge_lora(model).save_pretrained(out, tokenizer=tok)


def _train_keeping_head(model: HybridLM, batches, evals, cfg, tok, out: Path, stage: str, progress: bool,
                        before_model: HybridLM | None = None, **finetune_kwargs) -> dict:
    """`finetune` of a full model (distillation) whose export is `out`; a model with an MTP head gets it distilled
    from the trained model afterwards (on rank 0), with the acceptance lengths in the result (`before` measured
    on `before_model`, default the model itself)."""
    prompts = mtp_head.heldout_prompts(evals) if model.mtp is not None else []
    before = mtp_head.acceptance(before_model or model, prompts) if _is_main() else None
    trained: list[HybridLM] = []

    def keep(state: dict) -> Path:  # with a head: written below, after its refresh
        if model.mtp is None:
            return export_model(model.config, state, tok, out)
        trained.append(_trained(model, state))
        return out

    result = finetune(model, batches, _run(cfg), eval_batches=evals, progress=progress, export=keep,
                      **finetune_kwargs)
    if trained and _is_main():
        done = trained[0].to(next(model.parameters()).device)
        result.update(refresh_head(done, batches, replace(cfg, distributed="none"), prompts, before, stage))
        done.save_pretrained(out, tokenizer=tok)
    return result


def distill_job(cfg: DistillRecipe, progress: bool = True) -> dict:
    """The student `cfg.model.init_from` trained on `cfg.teacher`'s top-k logits over `cfg.data.path`; writes
    OUT_DIR/model. A student with an MTP head gets it distilled from the trained student afterwards (the logit
    distillation never trains it), with the acceptance lengths before and after in the summary."""
    out = Path(cfg.out_dir)
    tok = Tokenizer.load(cfg.teacher)
    teacher = HybridLM.from_pretrained(cfg.teacher, dtype=cfg.weights_dtype(tune_device(cfg)))
    student = HybridLM.from_pretrained(cfg.model.init_from)  # trained: fp32 master weights
    batches, evals = tune_data(cfg.data.path, tok, cfg)
    result = _train_keeping_head(student, batches, evals, cfg, tok, out / "model", "distill", progress,
                                 teacher=teacher)
    if _is_main():
        write_json(out / "summary.json", result)
    return result


def prune_job(cfg: PruneRecipe, progress: bool = True) -> dict:
    """Minitron-style pruning of `cfg.model.init_from` to `cfg.target_params` (then, with `cfg.recover`,
    distillation from the original, and a model's MTP head distilled from the recovered model); writes
    OUT_DIR/model and OUT_DIR/prune.json."""
    if cfg.threads:  # calibration and the plan search run before the recovery run sets its own
        torch.set_num_threads(cfg.threads)
    out, src, d = Path(cfg.out_dir), Path(cfg.model.init_from), cfg.data
    model = HybridLM.from_pretrained(src).eval()
    calib = list(iter_eval_batches(d.path, d.seq_len, d.batch_size, split="train", max_batches=cfg.calib_batches))
    t0 = time.perf_counter()
    importance = estimate_importance(model, calib)
    plan, table = search_plan(model, importance, int(cfg.target_params), calib, max_candidates=cfg.candidates)
    pruned = prune_model(model, importance, plan)
    report = {"model": str(src), "params_before": model.num_params(), "params_after": pruned.num_params(),
              "target_params": int(cfg.target_params), "plan": plan.to_dict(),
              "calib_loss_before": importance.base_loss,
              "block_importance": importance.layers.tolist(), "candidates": table,
              "seconds": round(time.perf_counter() - t0, 1)}
    _say(f"pruned {model.num_params():,} -> {pruned.num_params():,} params: {plan}")
    tok = Tokenizer.load(src) if (src / "tokenizer.json").is_file() else None
    if cfg.recover:
        evals = packed_eval_batches(d.path, d.seq_len, d.batch_size, cfg.eval_batches)
        batches = packed_batches(d.path, d.seq_len, d.batch_size, cfg.seed)
        # the head's acceptance before: the original model's; after: the pruned head distilled from the recovered
        distill = _train_keeping_head(pruned, batches, evals, cfg, tok, out / "model", "prune", progress,
                                      teacher=model, before_model=model)
        report.update({k: distill.pop(k) for k in ("mtp_acceptance", "mtp_refresh") if k in distill}, distill=distill)
    elif _is_main():
        pruned.save_pretrained(out / "model", tokenizer=tok)
    if not _is_main():
        return report
    write_json(out / "prune.json", report)
    return report
