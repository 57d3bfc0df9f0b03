"""The `hytron customize RECIPE` pipeline (the enterprise path) on model directories.

`run_customize` runs, each stage skipped when its output is complete: curate your documents → pack them with a
replay share of general data (with the base model's tokenizer) → evaluate the base model → continued
pre-training (`hytron.train.pretrain`, all weights) or LoRA (`hytron.pipelines.jobs.lora_job`, merged) → SFT with
reasoning when the recipe has an `sft` section → evaluate again → model and data cards.

    OUT/curated/  OUT/packed/  OUT/train/ (pretrain run) or OUT/lora/{adapter,model,run}/  OUT/sft/
    OUT/customize.json   before/after: loss on held-out own documents and on replay data (forgetting), probes

A pipeline, like the quickstart: it composes the stages (curation, training, tuning, evaluation, cards).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from hytron.config import save_resolved
from hytron.data.io import write_json
from hytron.data.mix import Blend, Component
from hytron.data.summary import removal_summary
from hytron.eval import evaluate_model
from hytron.model import HybridLM
from hytron.packing import PackedData, pack
from hytron.pipelines.jobs import lora_job
from hytron.report.cards import write_cards
from hytron.tokenizer import Tokenizer
from hytron.train import mtp as mtp_head
from hytron.train.pretrain import pretrain
from hytron.train.recipe import TrainConfig
from hytron.train.sft import sft
from hytron.tune.finetune import evaluate, packed_eval_batches
from hytron.tune.probes import score_probes
from hytron.tune.recipe import CustomizeConfig, LoRARecipe, as_recipe


def _say(msg: str) -> None:
    print(f"[customize] {msg}", file=sys.stderr, flush=True)


def _evaluate(model_dir: Path, tokenizer, packed: Path, cfg: CustomizeConfig) -> dict:
    """Held-out loss on each blend component (own documents, replay) and the probes, for one model."""
    model = HybridLM.from_pretrained(model_dir).eval()
    t = cfg.train.data
    tasks: dict = {}
    for comp in PackedData(packed).components("val"):
        try:
            batches = packed_eval_batches(packed, t.seq_len, t.batch_size, cfg.train.eval_batches, component=comp)
        except ValueError:  # too few held-out tokens for one window
            batches = packed_eval_batches(packed, 32, t.batch_size, cfg.train.eval_batches, component=comp)
        tasks[f"heldout_{comp}"] = evaluate(model, batches)
    if cfg.probes:
        tasks["probes"] = score_probes(model, tokenizer, cfg.probes)
    if cfg.eval_harness:
        tasks.update(evaluate_model(model_dir, write=False).get("tasks", {}))
    if model.mtp is not None:  # kept out of the cards' tasks: customize.json's "mtp_acceptance"
        tasks["mtp_acceptance"] = mtp_head.acceptance(model, mtp_head.heldout_prompts(
            packed_eval_batches(packed, 2 * mtp_head.PROMPT_LEN, mtp_head.ACCEPT_PROMPTS, 1)))
    return tasks


def run_customize(cfg: CustomizeConfig) -> dict:
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

    # the train section's run shape; the stage's name, folder, seed, threads, start and data are the pipeline's
    # (a base model's MTP head trains along, or is distilled after LoRA, unless mtp_refresh is false)
    spec = cfg.train.model
    stage = {"seed": cfg.seed, "threads": cfg.threads, "data": replace(cfg.train.data, path=str(out / "packed")),
             "model": replace(spec, init_from=str(base), mtp=replace(spec.mtp, refresh=cfg.mtp_refresh))}
    if cfg.method == "pretrain":
        _say(f"4/6 continued pre-training for {cfg.train.steps} steps")
        shape = {f.name: getattr(cfg.train, f.name) for f in fields(TrainConfig) if f.init}
        summary = pretrain(TrainConfig(**{**shape, **stage, "name": cfg.name, "out_dir": str(out / "train"),
                                          "checkpoint_every": max(1, cfg.train.steps // 4)}))
        model_dir, run_dir = Path(summary.get("model_dir") or out / "train" / "model"), out / "train"
    else:
        _say(f"4/6 LoRA r={cfg.lora.r} for {cfg.train.steps} steps")
        model_dir, run_dir = out / "lora" / "model", None
        if not (model_dir / "config.json").is_file():
            lora_job(as_recipe(LoRARecipe, cfg.train, **stage, name=f"{cfg.name}-lora", out_dir=str(out / "lora"),
                               lora=cfg.lora, merge=True))
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
