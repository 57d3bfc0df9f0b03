"""Training verbs: `hytron pretrain`, `hytron sft` and `hytron rl`, each a recipe run (single process or torchrun)."""

from __future__ import annotations

import argparse

from hytron.cli.recipes import add_recipe_verb, report_run

# verb: (help, description, an example recipe)
STAGES = {
    "pretrain": ("pre-train (or continue pre-training) a hybrid model from a recipe",
                 "Runs the recipe's loop; re-running with the same out_dir resumes from the newest valid "
                 "checkpoint. Under torchrun, set distributed=ddp or fsdp.", "tiny"),
    "sft": ("chat SFT with loss on assistant tokens only (resumable)",
            "Fine-tunes model.init_from (or a fresh preset) on chat JSONL rows; re-running with the same out_dir "
            "resumes from the newest valid checkpoint.", "sft-tiny"),
    "rl": ("GRPO (Dr.GRPO) with verifiable rewards and a length penalty on correct answers",
           "Improves model.init_from with on-policy GRPO; resumable like sft.", "rl-tiny"),
}


def add_pretrain(sub) -> None:
    add_recipe_verb(sub, "pretrain", STAGES, cmd_pretrain)


def add_sft(sub) -> None:
    add_recipe_verb(sub, "sft", STAGES, cmd_sft)


def add_rl(sub) -> None:
    add_recipe_verb(sub, "rl", STAGES, cmd_rl)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from hytron.config import load_recipe
    from hytron.train.pretrain import pretrain
    from hytron.train.recipe import TrainConfig

    cfg = load_recipe(TrainConfig, args.recipe, args.overrides, args.section)
    return report_run(pretrain(cfg, progress=not args.no_progress))


def cmd_sft(args: argparse.Namespace) -> int:
    from hytron.config import load_recipe
    from hytron.train.recipe import SFTConfig
    from hytron.train.sft import sft

    return report_run(sft(load_recipe(SFTConfig, args.recipe, args.overrides, args.section),
                          progress=not args.no_progress))


def cmd_rl(args: argparse.Namespace) -> int:
    from hytron.config import load_recipe
    from hytron.reasoning.prompts import problem_prompts
    from hytron.train.rl import RLConfig, grpo

    cfg = load_recipe(RLConfig, args.recipe, args.overrides, args.section)
    return report_run(grpo(cfg, problem_prompts(cfg), progress=not args.no_progress))
