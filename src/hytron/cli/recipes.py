"""The arguments every recipe verb shares (a recipe name or file, `--set KEY=VALUE`, `--section`), and its exit."""

from __future__ import annotations

import argparse
import json


def add_recipe_args(p: argparse.ArgumentParser, example: str, section: bool = True) -> None:
    p.add_argument("recipe", help=f"a named recipe shipped with hytron (e.g. {example}) or a YAML file")
    add_set(p)
    if section:
        p.add_argument("--section", default=None, help="read this top-level section of the YAML file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (metrics still go to JSONL)")


def add_recipe_verb(sub, verb: str, table: dict[str, tuple[str, str, str]], func) -> None:
    """A verb that runs one recipe: `table[verb]` is (help, description, the shipped example recipe)."""
    help_, description, example = table[verb]
    p = sub.add_parser(verb, help=help_, description=description)
    add_recipe_args(p, example)
    p.set_defaults(func=func)


def add_set(p: argparse.ArgumentParser) -> None:
    """`--set key.sub=value` (repeatable), parsed by `hytron.config.apply_overrides` for every recipe kind."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set optim.lr=1e-3 (value parsed as YAML; repeatable)")


def report_run(summary: dict, run_dir: str | None = None) -> int:
    """Print a training summary, write the model and data cards beside an exported model; the exit code
    (0 finished or paused, 130 interrupted by a signal)."""
    if summary.get("model_dir"):
        from hytron.report.cards import write_cards

        write_cards(summary["model_dir"], run_dir or summary["out_dir"],
                    evals={k: v for k, v in summary.items() if k.startswith("val_") and k != "val_tokens"})
    print(json.dumps(summary, indent=2))
    return 0 if summary["status"] in ("finished", "paused") else 130
