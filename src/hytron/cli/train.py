"""Training verbs: `hytron pretrain`, `hytron sft` and `hytron rl`, each a recipe run (single process or torchrun)."""

from __future__ import annotations

import argparse

from hytron.cli.recipes import add_recipe_args, report_run


def add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train (or continue pre-training) a hybrid model from a recipe",
                       description="Runs the recipe's loop; re-running with the same out_dir resumes from the "
                                   "newest valid checkpoint. Under torchrun, set distributed=ddp or fsdp.")
    add_recipe_args(p, "tiny")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from hytron.config import load_recipe
    from hytron.train.pretrain import pretrain
    from hytron.train.recipe import TrainConfig

    cfg = load_recipe(TrainConfig, args.recipe, args.overrides, args.section)
    return report_run(pretrain(cfg, progress=not args.no_progress))


def add_sft(sub) -> None:
    p = sub.add_parser("sft", help="chat SFT with loss on assistant tokens only (resumable)",
                       description="Fine-tunes model.init_from (or a fresh preset) on chat JSONL rows; re-running "
                                   "with the same out_dir resumes from the newest valid checkpoint.")
    add_recipe_args(p, "sft-tiny")
    p.set_defaults(func=cmd_sft)


def cmd_sft(args: argparse.Namespace) -> int:
    from hytron.config import load_recipe
    from hytron.train.sft import SFTConfig, sft

    cfg = load_recipe(SFTConfig, args.recipe, args.overrides, args.section)
    return report_run(sft(cfg, progress=not args.no_progress))


def add_rl(sub) -> None:
    p = sub.add_parser("rl", help="GRPO (Dr.GRPO) with verifiable rewards and a length penalty on correct answers",
                       description="Improves model.init_from with on-policy GRPO; resumable like sft.")
    add_recipe_args(p, "rl-tiny")
    p.set_defaults(func=cmd_rl)


def cmd_rl(args: argparse.Namespace) -> int:
    from hytron.config import load_recipe
    from hytron.reasoning.grpo import problem_prompts
    from hytron.train.rl import RLConfig, grpo

    cfg = load_recipe(RLConfig, args.recipe, args.overrides, args.section)
    return report_run(grpo(cfg, problem_prompts(cfg), progress=not args.no_progress))
