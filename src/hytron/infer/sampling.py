"""Per-request sampling: validated parameters, penalties, next-token choice (greedy, temperature, top-k, top-p,
min-p), logprobs.

Each request owns a `torch.Generator` seeded from its `seed`, so a seeded request samples the same tokens
whether it runs alone or batched with others (given the same logits). Sampling draws one uniform number per
token and inverts the CDF of the filtered distribution, which keeps a seeded draw stable under the tiny
logit differences that batching can cause.

The logits go through the steps in vLLM's order: `logit_bias` is added, then the penalties (`apply_penalties`,
over the request's `TokenHistory`), then temperature and the filters; greedy takes the argmax after the
penalties. Logprobs are always those of the raw logits (vLLM's default `raw_logprobs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class SamplingParams:
    """How to generate one completion. `temperature=0` is greedy; `max_tokens` counts thinking tokens too."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # stop strings, matched in the answer text (never inside thinking)
    stop_token_ids: tuple[int, ...] = ()  # extra ids that end generation (besides the engine's stop ids)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; k >= 0: chosen token's logprob plus the top k
    prompt_logprobs: int | None = None  # same, for every prompt token after the first (completions `echo`)
    # thinking: None = raw text (no reasoning tracking); True = the prompt ends inside an open <think>
    # section (generation starts in the thinking); False = answer only (<think>/</think> are never sampled)
    thinking: bool | None = None
    max_thinking_tokens: int | None = None
    thinking_grace: int | None = None  # extra tokens allowed to reach a newline; None = 10% of the budget
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit before sampling (vLLM, OpenAI)
    # penalties with vLLM's semantics (`apply_penalties`): presence and frequency in [-2, 2] count generated
    # tokens only; repetition (> 0, 1 = off) covers the prompt and the generated tokens
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        self.stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        self.stop_token_ids = tuple(int(i) for i in self.stop_token_ids)

        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ValueError(f"{name}: {msg} (got {getattr(self, name)!r})")

        need(isinstance(self.max_tokens, int) and self.max_tokens >= 0, "max_tokens", "must be an integer >= 0")
        need(_finite(self.temperature) and self.temperature >= 0, "temperature", "must be a number >= 0")
        need(_finite(self.top_p) and 0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        need(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "must be an integer >= 0 (0 = off)")
        need(_finite(self.min_p) and 0 <= self.min_p <= 1, "min_p", "must be in [0, 1]")
        need(self.seed is None or isinstance(self.seed, int), "seed", "must be an integer or None")
        need(self.thinking in (None, True, False), "thinking", "must be None, True or False")
        need(all(isinstance(s, str) and s for s in self.stop), "stop", "must be non-empty strings")
        for name in ("presence_penalty", "frequency_penalty"):
            need(_finite(getattr(self, name)) and -2 <= getattr(self, name) <= 2, name, "must be in [-2, 2]")
        need(_finite(self.repetition_penalty) and self.repetition_penalty > 0, "repetition_penalty", "must be > 0")
        if self.logit_bias is not None:
            need(isinstance(self.logit_bias, dict) and all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 and _finite(b)
                for i, b in self.logit_bias.items()), "logit_bias", "must map token ids >= 0 to finite numbers")
        for name in ("logprobs", "prompt_logprobs", "max_thinking_tokens", "thinking_grace"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and v >= 0), name, "must be an integer >= 0 or None")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1

    def grace(self) -> int:
        """Tokens allowed past `max_thinking_tokens` while waiting for a newline (NIM: 10% of the budget)."""
        if self.thinking_grace is not None:
            return self.thinking_grace
        return math.ceil(0.1 * (self.max_thinking_tokens or 0))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class TokenLogprob:
    """The log-probability of one token under the model (raw logits, before temperature or filters)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (id, logprob), best first


class TokenHistory:
    """What one request's penalties need: how often each id was generated, and which ids were seen at all (in
    the prompt, for the repetition penalty, or generated). Two (V,) tensors, updated as tokens are chosen."""

    def __init__(self, prompt_ids: list[int], vocab_size: int, params: SamplingParams):
        self.counts = torch.zeros(vocab_size)  # (V,) times each id was generated
        self.seen = torch.zeros(vocab_size, dtype=torch.bool)  # (V,) in the prompt (repetition only) or generated
        if params.repetition_penalty != 1:
            self.seen[torch.tensor(prompt_ids, dtype=torch.long)] = True

    def add(self, token_id: int) -> None:
        self.counts[token_id] += 1
        self.seen[token_id] = True


def apply_penalties(logits: Tensor, seen: Tensor, counts: Tensor, presence: float | Tensor = 0.0,
                    frequency: float | Tensor = 0.0, repetition: float | Tensor = 1.0) -> Tensor:
    """vLLM's penalties on logits (..., V), one row per request: `seen` (..., V) bool marks the ids in the prompt
    or the output, `counts` (..., V) how often each id was generated; each penalty is a number or a (..., 1)
    tensor (its own value per row). For every id:
        logit = logit / repetition if logit > 0 else logit * repetition      (only where seen)
        logit = logit - frequency * count - presence * (count > 0)           (OpenAI's definition)
    so repetition > 1 makes every seen id less likely whatever its logit's sign (Keskar et al. 2019, CTRL)."""
    r = torch.where(seen, torch.as_tensor(repetition, dtype=logits.dtype), torch.ones((), dtype=logits.dtype))
    logits = torch.where(logits > 0, logits / r, logits * r)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def make_generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    return g


def filter_logits(logits: Tensor, params: SamplingParams) -> Tensor:
    """logits (V,) fp32 -> logits with temperature applied and filtered tokens set to -inf."""
    x = logits / params.temperature
    if params.top_k and params.top_k < x.numel():
        kth = torch.topk(x, params.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.min_p > 0:
        probs = torch.softmax(x, -1)
        x = x.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
    if params.top_p < 1:
        sorted_x, order = torch.sort(x, descending=True)
        cum = torch.softmax(sorted_x, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_x, -1) >= params.top_p  # keep the smallest prefix reaching top_p
        x = x.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    return x


def adjust_logits(logits: Tensor, params: SamplingParams, banned: tuple[int, ...] = (),
                  history: TokenHistory | None = None, penalize: bool = True) -> Tensor:
    """logits (V,) -> fp32 logits with `logit_bias` added, then the penalties over `history` (needed when
    `params.penalized` and `penalize`), as vLLM orders them; `banned` ids at -inf."""
    logits = logits.float()
    if params.logit_bias:
        logits = logits.clone()
        ids = list(params.logit_bias)
        logits[ids] += torch.tensor([float(params.logit_bias[i]) for i in ids])
    if params.penalized and penalize:
        if history is None:
            raise ValueError("sample: penalties need the request's TokenHistory")
        logits = apply_penalties(logits, history.seen, history.counts, params.presence_penalty,
                                 params.frequency_penalty, params.repetition_penalty)
    if banned:
        logits = logits.clone()
        logits[list(banned)] = float("-inf")
    return logits


def sample(logits: Tensor, params: SamplingParams, generator: torch.Generator,
           banned: tuple[int, ...] = (), history: TokenHistory | None = None) -> int:
    """Choose the next token from logits (V,) under `params`: its `logit_bias` added first, then its penalties
    over `history` (needed when `params.penalized`), as vLLM does; `banned` ids are never chosen."""
    logits = adjust_logits(logits, params, banned, history)
    if params.greedy:
        return int(torch.argmax(logits))
    return _draw(torch.softmax(filter_logits(logits, params), -1), generator)


def _draw(probs: Tensor, generator: torch.Generator) -> int:
    """One draw from probs (V,) (unnormalised is fine): one uniform number through the inverse CDF."""
    u = torch.rand((), generator=generator)
    cdf = probs.cumsum(-1)
    idx = int(torch.searchsorted(cdf, u * cdf[-1], right=True).clamp(max=probs.numel() - 1))
    while probs[idx] == 0:  # never land on a filtered token through rounding at a CDF plateau
        idx -= 1
    return idx


# ---- speculative decoding: a draft token from q, accepted or replaced so the result is drawn from p ----------
def draft_token(logits: Tensor, params: SamplingParams, generator: torch.Generator,
                banned: tuple[int, ...] = ()) -> tuple[int, Tensor | None]:
    """A draft token from a draft model's logits (V,) and the distribution q (V,) it was drawn from (None when
    greedy: the argmax). Any q keeps the output exact (see `verify_draft`); this one is the draft model's own
    under the request's bias, temperature and filters (penalties skipped: they depend on the accepted prefix)."""
    logits = adjust_logits(logits, params, banned, penalize=False)
    if params.greedy:
        return int(torch.argmax(logits)), None
    q = torch.softmax(filter_logits(logits, params), -1)
    return _draw(q, generator), q


def verify_draft(logits: Tensor, params: SamplingParams, generator: torch.Generator, draft: int,
                 q: Tensor | None, banned: tuple[int, ...] = (), history: TokenHistory | None = None) -> int:
    """The next token, given the target logits (V,) and a `draft` drawn from q (`draft_token`): speculative
    sampling (Leviathan et al. 2023, Chen et al. 2023) keeps the draft with probability min(1, p(draft)/q(draft))
    and otherwise draws from max(0, p - q) normalised, so the token is distributed exactly as `sample` draws it
    (p: the same bias, penalties, bans, temperature and filters). Greedy: the argmax of p (the caller compares it
    with the draft). The draft is kept iff the returned token equals it."""
    logits = adjust_logits(logits, params, banned, history)
    if params.greedy:
        return int(torch.argmax(logits))
    p = torch.softmax(filter_logits(logits, params), -1)
    if torch.rand((), generator=generator) * q[draft] < p[draft]:
        return draft
    residual = (p - q).clamp(min=0)  # all zero only if p == q, where the draft is always kept
    return _draw(residual if float(residual.sum()) > 0 else p, generator)


def token_logprob(logits: Tensor, token_id: int, top: int) -> TokenLogprob:
    """Logprob of `token_id` under logits (V,), and the `top` most likely alternatives."""
    lp = torch.log_softmax(logits.float(), -1)
    alts: list[tuple[int, float]] = []
    if top > 0:
        vals, ids = torch.topk(lp, min(top, lp.numel()))
        alts = [(int(i), float(v)) for i, v in zip(ids, vals)]
    return TokenLogprob(int(token_id), float(lp[token_id]), alts)


def sequence_logprobs(logits: Tensor, targets: Tensor, top: int) -> list[TokenLogprob]:
    """logits (n, V), row j predicting targets[j] -> one TokenLogprob per target (n of them)."""
    lp = torch.log_softmax(logits.float(), -1)  # (n, V)
    chosen = lp.gather(1, targets[:, None])[:, 0]
    if top > 0:
        vals, idx = torch.topk(lp, min(top, lp.size(-1)), dim=-1)
    out = []
    for j in range(lp.size(0)):
        alts = [(int(i), float(v)) for i, v in zip(idx[j], vals[j])] if top > 0 else []
        out.append(TokenLogprob(int(targets[j]), float(chosen[j]), alts))
    return out
