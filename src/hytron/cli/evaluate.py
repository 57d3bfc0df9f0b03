"""Evaluation verbs: `hytron eval MODEL_DIR`, `hytron reproduce CLAIM --out DIR`, `hytron report RUN_DIR`."""

from __future__ import annotations

import argparse
import json

from hytron.cli.recipes import add_set


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model directory: held-out loss/bpb, TinyWeb QA, reasoning, lm-eval",
                       description="Writes MODEL_DIR/eval.json (and refreshes the model and data cards). QA tasks "
                                   "are multiple choice ranked by log-likelihood (see hytron.eval.tasks).")
    p.add_argument("model_dir", help="a Nemotron-H model directory with its tokenizer (e.g. runs/x/model)")
    p.add_argument("--evals", default=None, help="a TinyWeb folder (or its evals/); default: the crawl named in "
                   "the model card, else TinyWeb seed-0 evaluation sets")
    p.add_argument("--tasks", type=_csv, default=["validation", "world_qa", "arithmetic"],
                   help="comma-separated: validation, world_qa, arithmetic, reasoning (default: the first three); "
                        "none: only the --lm-eval tasks")
    p.add_argument("--limit", type=int, default=None, help="at most this many items per task")
    p.add_argument("--lm-eval", dest="lm_eval", type=_csv, default=[], metavar="TASKS",
                   help="lm-evaluation-harness task names to run in process (offline; needs hytron[eval])")
    p.add_argument("--lm-eval-include", default=None, metavar="DIR", help="folder of local lm-eval task YAMLs")
    p.add_argument("--write-lm-eval-tasks", default=None, metavar="DIR",
                   help="write TinyWeb QA as lm-eval tasks (hytron_world_qa, hytron_arithmetic) into DIR, then "
                        "run them unless --lm-eval names others")
    p.add_argument("--reasoning-n", type=int, default=100, help="reasoning problems (task `reasoning`)")
    p.add_argument("--max-tokens", type=int, default=256, help="reasoning: tokens per answer, thinking included")
    p.add_argument("--budgets", type=_csv, default=["0", "8", "16", "32", "64", "none"],
                   help="thinking budgets for the reasoning curve (`none` = unbounded)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass when scoring")
    p.add_argument("--no-write", action="store_true", help="print only; do not write eval.json or cards")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from hytron.eval import evaluate_model

    tasks = [] if [t.lower() for t in args.tasks] == ["none"] else list(args.tasks)
    extra = {}
    if "reasoning" in tasks:
        tasks.remove("reasoning")
        from hytron.reasoning import evaluate_reasoning

        budgets = [None if b.lower() == "none" else int(b) for b in args.budgets]
        extra["reasoning"] = lambda: evaluate_reasoning(args.model_dir, n=args.reasoning_n, budgets=budgets,
                                                        max_tokens=args.max_tokens)
    lm_tasks, include = list(args.lm_eval), args.lm_eval_include
    if args.write_lm_eval_tasks:
        from pathlib import Path

        from hytron.eval.harness import evals_from_card
        from hytron.eval.lm_eval_bridge import write_tinyweb_tasks

        src = args.evals or evals_from_card(Path(args.model_dir))
        if src is None:
            raise ValueError("--write-lm-eval-tasks needs --evals DIR (a TinyWeb folder)")
        include = str(write_tinyweb_tasks(src, args.write_lm_eval_tasks, limit=args.limit))
        lm_tasks = lm_tasks or ["hytron_world_qa", "hytron_arithmetic"]
    results = evaluate_model(args.model_dir, evals=args.evals, tasks=tasks, limit=args.limit, lm_eval_tasks=lm_tasks,
                             lm_eval_include=include, extra=extra, write=not args.no_write,
                             batch_size=args.batch_size)
    if not args.no_write:
        from hytron.report.cards import refresh_cards

        refresh_cards(args.model_dir, results)
    print(json.dumps(results, indent=2))
    return 0


def add_reproduce(sub) -> None:
    from hytron.claims import CLAIMS

    p = sub.add_parser("reproduce", help="reproduce a headline claim at laptop scale: " + ", ".join(CLAIMS),
                       description="Runs the claim once per seed and writes OUT/result.json (per-seed values, mean, "
                                   "95%% interval, verdict, settings, data hashes) and PNG plots. --quick is the CI "
                                   "size (a minute or two on a CPU).")
    p.add_argument("claim", choices=CLAIMS)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quick", action="store_true", help="the smallest size (CI); default: the full CPU size")
    p.add_argument("--seeds", type=int, default=None,
                   help="independent runs (seeds 0..N-1; for hybrid: interleaved timing rounds); default: the "
                        "claim's (nvfp4 8, hybrid 5 rounds, others 3), 2 with --quick")
    add_set(p)  # a setting of the claim, e.g. --set 'budgets=[40960, 163840, 655360]' --set steps=300
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads, per process with --jobs (0: torch's default, shared out among the "
                        "--jobs processes)")
    p.add_argument("--jobs", type=int, default=1,
                   help="seeds run in this many processes at once (with --threads each); hybrid's timing rounds "
                        "always run one at a time")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    import torch

    from hytron.claims import run_claim

    if args.threads:
        torch.set_num_threads(args.threads)

    result = run_claim(args.claim, args.out, quick=args.quick, seeds=args.seeds,
                       overrides=args.overrides, jobs=args.jobs, threads=args.threads)
    print(json.dumps({"claim": result["claim"], "verdict": result["verdict"], "rule": result["rule"],
                      "gates": result["gates"], "headline": result["headline"],
                      "plots": result["plots"],
                      "seconds": result["seconds"], "out": args.out}, indent=2))
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a training run",
                       description="Loss curves, throughput, curation funnel, data blend, evaluation tables, "
                                   "budget curves and any claim reproductions, in RUN_DIR/report.html.")
    p.add_argument("run_dir", help="a training run directory (config.json, metrics.jsonl, model/)")
    p.add_argument("--out", default=None, help="HTML file to write (default RUN_DIR/report.html)")
    p.add_argument("--claims", nargs="*", default=[], metavar="DIR",
                   help="`hytron reproduce` output folders to include")
    p.add_argument("--cards", action="store_true", help="also (re)write the model and data cards in RUN_DIR/model")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hytron.report import build_report

    if args.cards:
        from hytron.report.cards import write_cards

        write_cards(Path(args.run_dir) / "model", args.run_dir)
    path = build_report(args.run_dir, args.out, args.claims)
    print(f"wrote {path}")
    return 0
