"""Customization verbs: `hytron lora`, `distill` and `prune RECIPE` (hytron.pipelines.jobs), `merge`, and
`customize RECIPE` (hytron.pipelines.customize)."""

from __future__ import annotations

import argparse
import json

from hytron.cli.recipes import add_recipe_verb, add_set

# verb: (help, description, the shipped example recipe)
JOBS = {
    "lora": ("train LoRA adapters on a model (PEFT format), optionally merged",
             "Freezes model.init_from and trains low-rank adapters on its Linears (attention, Mamba in_proj and MLP "
             "by default; lora.targets) on data.path (packed data or chat JSONL); writes OUT_DIR/adapter (peft "
             "loads it onto transformers' NemotronHForCausalLM) and, with merge: true, OUT_DIR/model. Prints how "
             "many modules of each layer kind got adapters. Re-running with the same out_dir resumes.", "lora"),
    "distill": ("train a student on a teacher's top-k logits (forward KL, temperature)",
                "Trains the student model.init_from on the teacher's top-k logits over data.path (kd_topk, "
                "kd_temperature, kd_alpha); writes OUT_DIR/model. Re-running with the same out_dir resumes.",
                "distill"),
    "prune": ("Minitron-style pruning to a parameter target (then distil to recover)",
              "Scores hidden channels, MLP neurons, Mamba heads and blocks of model.init_from by their activations "
              "on calibration batches of data.path, searches depth/width plans that land on target_params, keeps "
              "the one with the lowest calibration loss, writes OUT_DIR/model and OUT_DIR/prune.json, and with "
              "recover: true distils it from the original for `steps` steps.", "prune"),
}


def add_lora(sub) -> None:
    add_recipe_verb(sub, "lora", JOBS, cmd_lora)


def add_distill(sub) -> None:
    add_recipe_verb(sub, "distill", JOBS, cmd_distill)


def add_prune(sub) -> None:
    add_recipe_verb(sub, "prune", JOBS, cmd_prune)


def _job(args: argparse.Namespace, recipe_cls, job) -> dict:
    from hytron.config import load_recipe

    return job(load_recipe(recipe_cls, args.recipe, args.overrides, args.section), progress=not args.no_progress)


def cmd_lora(args: argparse.Namespace) -> int:
    from hytron.pipelines.jobs import lora_job
    from hytron.tune.recipe import LoRARecipe

    print(json.dumps(_job(args, LoRARecipe, lora_job), indent=2))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from hytron.pipelines.jobs import distill_job
    from hytron.tune.recipe import DistillRecipe

    print(json.dumps(_job(args, DistillRecipe, distill_job), indent=2))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from hytron.pipelines.jobs import prune_job
    from hytron.tune.recipe import PruneRecipe

    report = _job(args, PruneRecipe, prune_job)
    print(json.dumps({k: v for k, v in report.items() if k != "candidates"}, indent=2))
    return 0


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="fold a LoRA adapter into its base model: a plain Nemotron-H directory")
    p.add_argument("model", help="base Nemotron-H model directory")
    p.add_argument("adapter", help="PEFT LoRA adapter directory (written by hytron lora or by peft)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from hytron.pipelines.jobs import merge_job

    print(f"merged {args.adapter} into {args.model}: {merge_job(args.model, args.adapter, args.out)}")
    return 0


def add_customize(sub) -> None:
    p = sub.add_parser("customize", description="Runs a customize recipe (the shipped example: customize); "
                       "re-running skips finished stages.",
                       help="your documents -> continued pre-training or LoRA -> (SFT) -> eval -> cards")
    p.add_argument("recipe", help="a recipe file, or a named recipe shipped with hytron (e.g. customize)")
    add_set(p)
    p.set_defaults(func=cmd_customize)


def cmd_customize(args: argparse.Namespace) -> int:
    from hytron.config import load_recipe
    from hytron.pipelines.customize import run_customize
    from hytron.tune.recipe import CustomizeConfig

    result = run_customize(load_recipe(CustomizeConfig, args.recipe, args.overrides))
    print(json.dumps({k: result[k] for k in ("model_dir", "before", "after", "forgetting", "mtp_acceptance")
                      if k in result}, indent=2))
    return 0
