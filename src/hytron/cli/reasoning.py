"""Reasoning post-training verbs: `hytron reasoning-data`, `hytron sft`, `hytron reasoning-distill`, `hytron rl`."""

from __future__ import annotations

import argparse
import json


def _recipe_args(p) -> None:
    p.add_argument("recipe", help="a recipe name under recipes/ (e.g. sft-tiny) or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set data.path=rows.jsonl (repeatable)")
    p.add_argument("--section", default=None, help="read this top-level section of the YAML file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (metrics still go to JSONL)")


def add_reasoning_data(sub) -> None:
    p = sub.add_parser("reasoning-data", help="generate verifiable reasoning problems as chat SFT JSONL",
                       description="Rows: {messages, reasoning: on|off, id, kind, answer}; deterministic per seed.")
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--kinds", default="arithmetic,world,ordering", help="comma-separated problem kinds")
    p.add_argument("--n", type=int, default=1000, help="number of rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", default="verbose", choices=["verbose", "concise"], help="reasoning-trace style")
    p.add_argument("--off-share", type=float, default=0.1, help="share of rows with reasoning off")
    p.add_argument("--truncated-share", type=float, default=0.05, help="share of rows with truncated traces")
    p.set_defaults(func=cmd_reasoning_data)


def cmd_reasoning_data(args: argparse.Namespace) -> int:
    from hytron.reasoning.data import sft_rows, write_jsonl
    from hytron.reasoning.tasks import generate_problems

    problems = generate_problems([k.strip() for k in args.kinds.split(",") if k.strip()], args.n, args.seed)
    rows = sft_rows(problems, args.style, args.seed, off_share=args.off_share, truncated_share=args.truncated_share)
    path = write_jsonl(rows, args.out)
    off = sum(r["reasoning"] == "off" for r in rows)
    print(json.dumps({"out": str(path), "rows": len(rows), "reasoning_off": off}))
    return 0


def add_sft(sub) -> None:
    p = sub.add_parser("sft", help="chat SFT with loss on assistant tokens only (resumable)",
                       description="Fine-tunes model.init_from (or a fresh preset) on chat JSONL rows; re-running "
                                   "with the same out_dir resumes from the newest valid checkpoint.")
    _recipe_args(p)
    p.set_defaults(func=cmd_sft)


def cmd_sft(args: argparse.Namespace) -> int:
    from hytron.train.sft import load_sft_recipe, sft

    summary = sft(load_sft_recipe(args.recipe, args.overrides, args.section), progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0 if summary["status"] == "finished" or summary["status"].startswith("paused") else 130


def add_reasoning_distill(sub) -> None:
    p = sub.add_parser("reasoning-distill", help="rejection-sampling self-distillation: shortest correct traces",
                       description="Samples --samples traces per problem from MODEL_DIR and writes the shortest "
                                   "correct one per problem as SFT rows (then: hytron sft ... --set "
                                   "model.init_from=MODEL_DIR --set data.path=OUT).")
    p.add_argument("model_dir", help="a Nemotron-H model directory with its tokenizer")
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--kinds", default="arithmetic")
    p.add_argument("--n", type=int, default=500, help="number of problems")
    p.add_argument("--seed", type=int, default=1, help="problem seed (use one the SFT data did not)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--off-share", type=float, default=0.1)
    p.set_defaults(func=cmd_reasoning_distill)


def cmd_reasoning_distill(args: argparse.Namespace) -> int:
    from hytron.reasoning.data import write_jsonl
    from hytron.reasoning.distill import shortest_correct_rows
    from hytron.reasoning.generation import load_solver
    from hytron.reasoning.tasks import generate_problems

    problems = generate_problems([k.strip() for k in args.kinds.split(",") if k.strip()], args.n, args.seed)
    rows, stats = shortest_correct_rows(load_solver(args.model_dir), problems, samples=args.samples,
                                        temperature=args.temperature, seed=args.seed, max_tokens=args.max_tokens,
                                        off_share=args.off_share)
    write_jsonl(rows, args.out)
    print(json.dumps({"out": args.out, **stats}, indent=2))
    return 0


def add_rl(sub) -> None:
    p = sub.add_parser("rl", help="GRPO (Dr.GRPO) with verifiable rewards and a length penalty on correct answers",
                       description="Improves model.init_from with on-policy GRPO; resumable like sft.")
    _recipe_args(p)
    p.set_defaults(func=cmd_rl)


def cmd_rl(args: argparse.Namespace) -> int:
    from hytron.reasoning.grpo import run_grpo
    from hytron.train.rl import RLConfig
    from hytron.train.sft import load_sft_recipe

    summary = run_grpo(load_sft_recipe(args.recipe, args.overrides, args.section, cls=RLConfig),
                   progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0 if summary["status"] == "finished" or summary["status"].startswith("paused") else 130
