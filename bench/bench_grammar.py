"""Benchmark: per-token cost of a JSON-schema token mask, xgrammar vs llguidance, on a hytron tokenizer.

Both libraries are given the same tokenizer (hytron's byte-level BPE, trained on TinyWeb text, or any model
directory's with `--tokenizer`), the same JSON schema and the same valid document. Each decoding step fills the
next-token bitmask of every sequence in the batch and then advances each matcher by the document's next token,
so the time is what a server pays per generated token. Batch 16 runs 16 matchers on one thread, one after the
other (xgrammar's `BatchGrammarMatcher` and llguidance's parallel fill would use more cores; this machine's are
shared). Grammar compile time is printed apart. Best of `--repeats`.

    python bench/bench_grammar.py [--tokenizer MODEL_DIR] [--vocab 4096] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"},
    "home": {"type": "object", "properties": {"river": {"type": "string"}, "north": {"type": "boolean"}},
             "required": ["river", "north"], "additionalProperties": False},
    "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age", "home", "tags"], "additionalProperties": False}
DOC = {"name": "Ilse, the fox who lived at the edge of the wood", "age": 42,
       "home": {"river": "The river Alder rises on Mount Kell and flows north to the sea", "north": True},
       "tags": ["apples", "rivers", "numbers", "Lesson 3: 17 + 25 = 42"]}


def tokenizer_dir(args, tmp: Path) -> Path:
    if args.tokenizer:
        return Path(args.tokenizer)
    from hytron.data.tinyweb import generate
    from hytron.packing import iter_texts
    from hytron.tokenizer import Tokenizer

    generate(tmp / "tinyweb", n_docs=args.docs, seed=0)
    Tokenizer.train(iter_texts([tmp / "tinyweb"]), vocab_size=args.vocab).save(tmp / "tok")
    return tmp / "tok"


def run_xgrammar(hf, vocab: int, ids: list[int], batch: int):
    import xgrammar as xgr

    t = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=vocab)
    grammar = xgr.GrammarCompiler(info, max_threads=1).compile_json_schema(json.dumps(SCHEMA))
    compile_s = time.perf_counter() - t
    matchers = [xgr.GrammarMatcher(grammar) for _ in range(batch)]
    mask = xgr.allocate_token_bitmask(batch, vocab)
    t = time.perf_counter()
    for tok in ids:
        for i, m in enumerate(matchers):
            m.fill_next_token_bitmask(mask, i)
        for m in matchers:
            assert m.accept_token(tok), "xgrammar refused the document"
    return compile_s, (time.perf_counter() - t) / len(ids)


def run_llguidance(hf, vocab: int, ids: list[int], batch: int):
    import llguidance
    import llguidance.hf
    from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask

    t = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(hf, n_vocab=vocab)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA))
    matchers = [llguidance.LLMatcher(lltok, grammar) for _ in range(batch)]
    compile_s = time.perf_counter() - t
    assert not matchers[0].is_error(), matchers[0].get_error()
    mask = allocate_token_bitmask(batch, vocab)
    t = time.perf_counter()
    for tok in ids:
        for i, m in enumerate(matchers):
            fill_next_token_bitmask(m, mask, i)
        for m in matchers:
            assert m.consume_token(tok), f"llguidance refused the document: {m.get_error()}"
    return compile_s, (time.perf_counter() - t) / len(ids)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", help="a model or tokenizer directory (default: train a BPE on TinyWeb)")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        d = tokenizer_dir(args, Path(tmp))
        hf = AutoTokenizer.from_pretrained(str(d))
        vocab = len(hf)
        ids = hf.encode(json.dumps(DOC, separators=(",", ":")), add_special_tokens=False) + [hf.eos_token_id]
        rows = []
        for batch in (1, 16):
            for name, fn in (("xgrammar", run_xgrammar), ("llguidance", run_llguidance)):
                best = min((fn(hf, vocab, ids, batch) for _ in range(args.repeats)), key=lambda r: r[1])
                rows.append({"library": name, "batch": batch, "vocab": vocab, "tokens": len(ids),
                             "compile_ms": round(best[0] * 1e3, 2), "us_per_step": round(best[1] * 1e6, 1),
                             "us_per_token": round(best[1] * 1e6 / batch, 1)})
                print(json.dumps(rows[-1]), flush=True)
        for batch in (1, 16):
            x, g = (next(r for r in rows if r["library"] == n and r["batch"] == batch)
                    for n in ("xgrammar", "llguidance"))
            print(f"batch {batch}: llguidance / xgrammar per-token mask cost = "
                  f"{g['us_per_token'] / x['us_per_token']:.2f}x")


if __name__ == "__main__":
    main()
