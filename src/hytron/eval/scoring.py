"""Log-likelihood scoring of text with a HybridLM: continuations given contexts, whole documents, greedy text.

Every evaluation in `hytron.eval` (and the lm-eval bridge) goes through `Scorer`: the same token ids score the
same. (The bridge tokenizes as lm-eval's `hf` backend does, without the `<s>` our own harness puts before a
context when the tokenizer does not add it: see `hytron.eval.lm_eval_bridge`.)

Conventions (same as pre-training, where each document is packed as `<s> text </s>`):
- a context starts with the tokenizer's document prefix (`<s>` for hytron's and most tokenizers; what the
  post-processor adds, or EOS for GPT-2-style tokenizers without BOS: `Tokenizer.document_prefix`);
  trailing whitespace of the context moves to the continuation before tokenizing
  (BPE merges a space with the next word, so " Paris" is one token but "Answer: " + "Paris" would not be);
- rows are right-padded: a causal model's logits at real positions never see the padding (Mamba's scan
  and attention both run left to right), so padding changes nothing and needs no mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F


class Scorer:
    """A model and its tokenizer, with batched log-likelihood functions. Runs under `torch.inference_mode`."""

    def __init__(self, model, tokenizer, *, batch_size: int = 32, max_len: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_len = int(max_len or min(model.config.max_position_embeddings, 2048))
        self.device = next(model.parameters()).device
        self._token_bytes: list[int] | None = None

    @classmethod
    def load(cls, model_dir: str | Path, **kwargs) -> Scorer:
        """A scorer for a Nemotron-H model directory that carries its tokenizer."""
        from hytron.model import HybridLM
        from hytron.tokenizer import Tokenizer

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model directory not found: {model_dir}")
        return cls(HybridLM.from_pretrained(model_dir), Tokenizer.load(model_dir), **kwargs)

    @property
    def token_bytes(self) -> list[int]:
        if self._token_bytes is None:
            self._token_bytes = self.tokenizer.token_bytes()
        return self._token_bytes

    # ---- tokenization --------------------------------------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(`<s>` + context ids, continuation ids), with the context's trailing whitespace moved over."""
        stripped = context.rstrip()
        continuation = context[len(stripped):] + continuation
        tok = self.tokenizer
        return [*tok.document_prefix(), *tok.encode(stripped)], tok.encode(continuation)

    # ---- scoring -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _score_rows(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool, float]]:
        """For (ids, n_target) rows: (sum log p of the last n_target ids, all greedy?, sum nats) per row."""
        out: list[tuple[float, bool, float] | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # similar lengths batch together
        pad = self.tokenizer.pad_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(len(rows[i][0]) for i in idx) - 1
            x = torch.full((len(idx), max(1, width)), pad, dtype=torch.long)
            for r, i in enumerate(idx):
                ids = rows[i][0]
                x[r, :len(ids) - 1] = torch.tensor(ids[:-1])
            logits = self.model(x.to(self.device)).float()  # (b, width, vocab)
            for r, i in enumerate(idx):
                ids, n = rows[i]
                pos = torch.arange(len(ids) - 1 - n, len(ids) - 1, device=logits.device)
                target = torch.tensor(ids[-n:], device=logits.device)
                logp = F.log_softmax(logits[r, pos], dim=-1)  # (n, vocab)
                picked = logp.gather(1, target[:, None]).squeeze(1)
                greedy = bool((logp.argmax(-1) == target).all())
                out[i] = (float(picked.sum()), greedy, float(-picked.sum()))
        return out  # type: ignore[return-value]

    def loglikelihood_ids(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """log p(continuation | context) and whether greedy decoding would produce it, for token-id pairs.

        Too-long rows keep their last `max_len + 1` tokens (the context is cut from the left)."""
        rows = []
        for ctx, cont in pairs:
            if not cont:
                raise ValueError("loglikelihood: empty continuation (nothing to score)")
            if not ctx:
                ctx = self.tokenizer.document_prefix()
            ids = (list(ctx) + list(cont))[-(self.max_len + 1):]
            rows.append((ids, min(len(cont), len(ids) - 1)))
        return [(lp, g) for lp, g, _ in self._score_rows(rows)]

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """log p(continuation | context) for text pairs (see `encode_pair`)."""
        return self.loglikelihood_ids([self.encode_pair(c, x) for c, x in pairs])

    def document_nll(self, texts: Sequence[str], eos: bool = True) -> list[dict]:
        """Per document `<s> text </s>` (`<s> text` without `eos`): summed negative log-likelihood (nats) of
        every token after `<s>`, the number of predicted tokens, and the UTF-8 bytes they carry (special
        tokens carry none).

        Documents longer than the context are scored in consecutive windows of `max_len` predictions, each
        window restarting with the previous window's last token as its only context."""
        tb = self.token_bytes
        rows, owners = [], []
        for d, text in enumerate(texts):
            ids = [*self.tokenizer.document_prefix(), *self.tokenizer.encode(text),
                   *([self.tokenizer.eos_id] if eos and self.tokenizer.eos_id is not None else [])]
            if len(ids) < 2:
                continue  # an empty text without </s>: nothing to predict
            for s in range(0, len(ids) - 1, self.max_len):
                window = ids[s:s + self.max_len + 1]
                rows.append((window, len(window) - 1))
                owners.append(d)
        docs = [{"nll": 0.0, "tokens": 0, "bytes": 0} for _ in texts]
        for (window, n), (_, _, nll), d in zip(rows, self._score_rows(rows), owners):
            docs[d]["nll"] += nll
            docs[d]["tokens"] += n
            docs[d]["bytes"] += sum(tb[t] for t in window[-n:])
        return docs

    def generate(self, contexts: Sequence[str | list[int]], *, max_tokens: int = 32, stop: Sequence[str] = (),
                 max_slots: int = 16) -> list[str]:
        """Greedy continuations of `<s>` + context (raw text, no chat template; token ids are used as given),
        context cut from the left to leave room for `max_tokens`, text cut at the first stop string (special
        tokens left out of it)."""
        from hytron.infer import SamplingParams, generate

        tok = self.tokenizer
        prompts = [(c if not isinstance(c, str) else [*tok.document_prefix(), *tok.encode(c)])
                   [-max(1, self.max_len - max_tokens):] for c in contexts]
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=tuple(s for s in stop if s))
        with torch.inference_mode():
            done = generate(self.model, prompts, params, max_slots=max_slots, tokenizer=tok)
        return [c.text for c in done]


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    """Total negative log-likelihood in nats over the bytes it covers -> bits per UTF-8 byte."""
    return nll_nats / math.log(2) / n_bytes if n_bytes else float("nan")
