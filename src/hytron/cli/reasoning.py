"""Reasoning data verbs: `hytron reasoning-data` (verifiable problems as chat rows), `hytron reasoning-distill`."""

from __future__ import annotations

import argparse
import json


def add_reasoning_data(sub) -> None:
    p = sub.add_parser("reasoning-data", help="generate verifiable reasoning problems as chat SFT JSONL",
                       description="Rows: {messages, reasoning: on|off, id, kind, answer}; deterministic per seed.")
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--kinds", default="arithmetic,world,ordering",
                   help="comma-separated problem kinds (arithmetic, world, ordering, subset_sum)")
    p.add_argument("--n", type=int, default=1000, help="number of rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", default="verbose", choices=["verbose", "concise", "search"],
                   help="reasoning-trace style (search: depth-first search traces, --kinds subset_sum only)")
    p.add_argument("--off-share", type=float, default=0.1, help="share of rows with reasoning off")
    p.add_argument("--truncated-share", type=float, default=0.05, help="share of rows with truncated traces")
    p.set_defaults(func=cmd_reasoning_data)


def cmd_reasoning_data(args: argparse.Namespace) -> int:
    from hytron.data.io import write_jsonl
    from hytron.reasoning.data import sft_rows
    from hytron.reasoning.tasks import generate_problems

    problems = generate_problems([k.strip() for k in args.kinds.split(",") if k.strip()], args.n, args.seed)
    rows = sft_rows(problems, args.style, args.seed, off_share=args.off_share, truncated_share=args.truncated_share)
    path = write_jsonl(rows, args.out)
    off = sum(r["reasoning"] == "off" for r in rows)
    print(json.dumps({"out": str(path), "rows": len(rows), "reasoning_off": off}))
    return 0


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
    from hytron.data.io import write_jsonl
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
