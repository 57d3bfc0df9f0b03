"""Verbs `hytron tokenizer train` (learn a BPE vocabulary) and `hytron tokenize` (pack a blend into shards)."""

from __future__ import annotations

import argparse
import json
import sys
import time


def add_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on curated text")
    verbs = p.add_subparsers(dest="tokenizer_verb", metavar="ACTION", required=True)
    t = verbs.add_parser("train", help="learn a vocabulary from JSONL documents and save it to --out")
    t.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="curation output dir (reads its kept/), folder of JSONL shards, or a JSONL file")
    t.add_argument("--blend", help="train on the documents this blend (file or shipped name) trains on "
                   "(exclusions and hold-out respected); INPUTs, if given, replace the blend's inputs")
    t.add_argument("--out", required=True, help="directory for tokenizer.json + tokenizer_config.json")
    t.add_argument("--vocab-size", type=int, default=4096, help="ids in total, special tokens included")
    t.add_argument("--min-frequency", type=int, default=2, help="a merge must occur at least this often")
    t.add_argument("--max-docs", type=int, default=None, help="train on at most this many documents")
    t.set_defaults(func=cmd_tokenizer)


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from hytron.config import recipe_path
    from hytron.data.mix import Blend
    from hytron.packing import iter_blend_texts, iter_texts
    from hytron.tokenizer import Tokenizer

    if args.blend:
        blend = Blend.load(recipe_path(args.blend))
        texts = iter_blend_texts(blend.with_inputs(args.inputs) if args.inputs else blend, max_docs=args.max_docs)
    elif args.inputs:
        texts = iter_texts(args.inputs, max_docs=args.max_docs)
    else:
        raise ValueError("give at least one INPUT or --blend FILE")
    start = time.perf_counter()
    tok = Tokenizer.train(texts, vocab_size=args.vocab_size,
                          min_frequency=args.min_frequency, show_progress=sys.stderr.isatty())
    tok.save(args.out)
    print(f"trained a {tok.vocab_size}-id byte-level BPE tokenizer in {time.perf_counter() - start:.1f}s "
          f"-> {args.out}")
    return 0


def add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="pack curated documents into token shards following a blend spec")
    p.add_argument("--blend", help="blend YAML file or shipped name (e.g. blend-quickstart); default: all --input "
                   "in one component")
    p.add_argument("--input", action="append", default=None, metavar="PATH",
                   help="input dir/file (repeatable); replaces the blend's `inputs`")
    p.add_argument("--tokenizer", required=True, help="tokenizer dir (or a model dir that carries one)")
    p.add_argument("--out", required=True, help="output dir for index.json and the .bin shards")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of documents held out for validation (overrides the blend)")
    p.add_argument("--seed", type=int, default=None, help="hold-out seed (overrides the blend)")
    p.add_argument("--shard-tokens", type=int, default=1 << 26, help="start a new shard after this many tokens")
    p.add_argument("--overwrite", action="store_true", help="replace an existing packed-data dir at --out")
    p.set_defaults(func=cmd_tokenize)


def cmd_tokenize(args: argparse.Namespace) -> int:
    from hytron.config import recipe_path
    from hytron.data.mix import Blend, single_component_blend
    from hytron.packing import pack
    from hytron.tokenizer import Tokenizer

    if args.blend:
        blend = Blend.load(recipe_path(args.blend))
        if args.input:
            blend = blend.with_inputs(args.input)
    elif args.input:
        blend = single_component_blend(args.input)
    else:
        raise ValueError("give --blend FILE or at least one --input PATH")
    overrides = {}
    if args.val_fraction is not None:
        overrides["validation_fraction"] = args.val_fraction
    if args.seed is not None:
        overrides["seed"] = args.seed
    if overrides:
        blend = Blend.from_mapping({**blend.to_dict(), **overrides})  # re-validated
    tok = Tokenizer.load(args.tokenizer)
    start = time.perf_counter()
    last = [0.0]

    def progress(docs: int, tokens: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 1.0:
            last[0] = now
            print(f"\r  {docs:,} docs read, {tokens:,} tokens written "
                  f"({tokens / max(now - start, 1e-9):,.0f} tok/s)", end="", file=sys.stderr, flush=True)

    try:
        index = pack(blend, tok, args.out, shard_tokens=args.shard_tokens, overwrite=args.overwrite,
                     progress=progress)
    except FileExistsError as e:  # reported as a one-line user error
        raise ValueError(str(e)) from None
    print(file=sys.stderr)
    elapsed = time.perf_counter() - start
    summary = {s: {c: v["num_tokens"] for c, v in index["splits"][s]["components"].items()}
               for s in index["splits"]}
    print(f"packed {index['splits']['train']['num_tokens']:,} train + {index['splits']['val']['num_tokens']:,} "
          f"val tokens ({index['dtype']}) in {elapsed:.1f}s -> {args.out}")
    print(json.dumps({"tokens": summary, "weights": index["weights"], "skipped": index["skipped"]}, indent=1))
    return 0
