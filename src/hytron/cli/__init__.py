"""`hytron <verb>`: the command line. Nothing imports this package.

`VERBS` below is the whole command line: each verb, in `hytron --help` order, with the function that adds its
parser (in this package's modules, grouped by stage) and sets `func` to the `cmd_<verb>(args)` that calls the
library. Heavy imports happen inside the verb so `hytron --help` stays fast and optional extras stay optional.
"""

from __future__ import annotations

import argparse
import sys

from hytron.cli import data, evaluate, export, model, quickstart, reasoning, runtime, serve, tokenize, train, tune

VERBS = {
    "quickstart": quickstart.add_quickstart,  # the whole stack on TinyWeb
    "model-info": model.add_model_info,
    "demo": model.add_demo,
    "tinyweb": data.add_tinyweb,
    "curate": data.add_curate,
    "tokenizer": tokenize.add_tokenizer,
    "tokenize": tokenize.add_tokenize,
    "pretrain": train.add_pretrain,
    "reasoning-data": reasoning.add_reasoning_data,
    "sft": train.add_sft,
    "reasoning-distill": reasoning.add_reasoning_distill,
    "rl": train.add_rl,
    "lora": tune.add_lora,
    "merge": tune.add_merge,
    "distill": tune.add_distill,
    "prune": tune.add_prune,
    "customize": tune.add_customize,
    "eval": evaluate.add_eval,
    "reproduce": evaluate.add_reproduce,
    "report": evaluate.add_report,
    "serve": serve.add_serve,
    "chat": serve.add_chat,
    "export": export.add_export,
}

# optional packages -> the extra that installs them (a missing one is a one-line error naming the extra)
EXTRAS = {"xxhash": "curate", "ftfy": "curate", "zstandard": "curate", "pyarrow": "curate", "pycld2": "curate",
          "resiliparse": "curate", "fastwarc": "curate", "sklearn": "curate", "ray": "ray", "fastapi": "serve",
          "uvicorn": "serve", "prometheus_client": "serve", "lm_eval": "eval", "matplotlib": "eval",
          "transformers": "hf", "gguf": "gguf"}


def build_parser() -> argparse.ArgumentParser:
    from hytron import __version__

    parser = argparse.ArgumentParser(
        prog="hytron", description="Build your own hybrid Mamba-2/Transformer language model."
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for add in VERBS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    runtime.tune_malloc()  # before any thread allocates (see hytron.cli.runtime)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:  # user errors: one clear line, no traceback
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"hytron {args.verb}: error: {msg}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"hytron {args.verb}: error: needs {e.name}, an optional dependency: pip install 'hytron[{extra}]'",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
