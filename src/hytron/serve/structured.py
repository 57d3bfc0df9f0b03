"""Structured outputs: `response_format` `json_object` / `json_schema` enforced by grammar-constrained decoding.

xgrammar compiles the JSON grammar (any JSON object, or one JSON schema) against the served tokenizer once per
schema (its compiler caches) and gives each request a matcher; the engine masks the logits of every answer
token with it (`hytron.infer.Engine.submit(constraint=...)`), so the answer is valid JSON by construction
(unless `max_tokens` cuts it: finish_reason "length"). Thinking is free: the mask applies from the first
answer token, after `</think>`. Picked over llguidance by `bench/bench_grammar.py` on a hytron 4,096-token
BPE: 3.7 vs 16 us per token at batch 1, 4.3 vs 13.7 us at batch 16 (one thread, BENCHMARKS.md); both are
small next to a model step. A schema xgrammar cannot compile is a 400 that names `response_format`.
"""

from __future__ import annotations

import functools
import json

import torch


class JSONConstraint:
    """One request's grammar state: `mask(logits)` leaves only the tokens the grammar allows next (only the stop
    ids once the JSON is complete), `accept(token)` advances it."""

    def __init__(self, compiled, vocab_size: int):
        import xgrammar as xgr

        self._xgr = xgr
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)  # (1, ceil(V / 32)) int32

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (V,) -> a copy with the disallowed tokens at -inf."""
        self.matcher.fill_next_token_bitmask(self.bitmask)
        out = logits.clone()[None]
        self._xgr.apply_token_bitmask_inplace(out, self.bitmask)
        return out[0]

    def accept(self, token_id: int) -> None:
        self.matcher.accept_token(int(token_id))


class Grammars:
    """The served tokenizer's grammar compiler (built on first use) and the constraints of requests."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids):
        self.tokenizer, self.vocab_size, self.stop_ids = tokenizer, vocab_size, list(stop_ids)

    @functools.cached_property
    def compiler(self):
        try:
            import xgrammar as xgr
        except ImportError as e:
            raise ImportError("response_format needs xgrammar: pip install 'hytron[serve]'") from e
        tok = self.tokenizer
        vocab = [tok.id_to_token(i) or "" for i in range(tok.vocab_size)]  # raw vocabulary strings
        decoder = json.dumps(json.loads(tok.backend_json()).get("decoder"))
        if '"ByteLevel"' in decoder:
            vocab_type, prefix_space = xgr.VocabType.BYTE_LEVEL, False
        elif '"ByteFallback"' in decoder:
            vocab_type, prefix_space = xgr.VocabType.BYTE_FALLBACK, '"Metaspace"' in decoder
        else:
            vocab_type, prefix_space = xgr.VocabType.RAW, False
        info = xgr.TokenizerInfo(vocab, vocab_type, vocab_size=self.vocab_size, stop_token_ids=self.stop_ids,
                                 add_prefix_space=prefix_space)
        return xgr.GrammarCompiler(info, max_threads=1)

    def constraint(self, kind: str, schema: dict | None = None) -> JSONConstraint:
        """A fresh constraint for `json_object` or `json_schema` (raises ValueError naming the problem)."""
        if kind == "json_object":
            compiled = self.compiler.compile_builtin_json_grammar()
        else:
            try:
                compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=True)
            except RuntimeError as e:  # xgrammar's message ends with the reason ("Unsupported type ...")
                reason = str(e).strip().split(": ", 1)[-1].strip()
                raise ValueError(f"response_format.json_schema.schema cannot be compiled: {reason}") from None
        return JSONConstraint(compiled, self.vocab_size)
