"""Training verbs: `hytron pretrain RECIPE` (single process or under torchrun)."""

from __future__ import annotations

import argparse
import json


def add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train (or continue pre-training) a hybrid model from a recipe",
                       description="Runs the recipe's loop; re-running with the same out_dir resumes from the "
                                   "newest valid checkpoint. Under torchrun, set distributed=ddp or fsdp.")
    p.add_argument("recipe", help="a recipe name under recipes/ (e.g. tiny) or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set optim.lr=1e-3 --set data.path=packed/ (repeatable)")
    p.add_argument("--section", default=None, help="read this top-level section of the YAML file (e.g. pretrain)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (metrics still go to JSONL)")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from hytron.train.pretrain import pretrain
    from hytron.train.recipe import load_recipe

    cfg = load_recipe(args.recipe, args.overrides, section=args.section)
    summary = pretrain(cfg, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0 if summary["status"] == "finished" or summary["status"].startswith("paused") else 130
