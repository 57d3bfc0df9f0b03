"""Thinking-budget control on token ids: end the thinking at a newline after the budget, else force `</think>`.

The rule is Nemotron Nano 2's `max_thinking_tokens` (research/reasoning-and-fullstack.md §A1.2): after N
thinking tokens, let the model finish its line — as soon as it emits a token containing a newline, the
next token is forced to `</think>`; if no newline comes within the grace window (NIM's default: 10% of the
budget), the line is ended for it: with a `line_end_id` (the id of "\n") that newline is forced first, then
`</think>`, so a cut trace still ends on a line break as the model's own traces do (NVIDIA's Nano 3 budget
processor forces "\n" + `</think>` the same way). So a request never thinks more than N + grace tokens, + 1
for a forced newline (the forced `</think>` not counted). Budget 0 forces `</think>` as the first generated
token. The caller supplies the ids (`</think>`, "\n", and the ids whose text contains a newline): this
module never sees a tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable


class ThinkingBudget:
    """Tracks one request's thinking phase; ask `forced()` before sampling, then `observe(token)` after."""

    def __init__(self, think_end_id: int, newline_ids: Iterable[int] = (), max_thinking_tokens: int | None = None,
                 grace: int = 0, thinking: bool = True, line_end_id: int | None = None):
        self.think_end_id = think_end_id
        self.line_end_id = line_end_id
        self.newline_ids = frozenset(newline_ids) | ({line_end_id} if line_end_id is not None else set())
        self.max_thinking_tokens = max_thinking_tokens
        self.grace = grace
        self.thinking = thinking  # inside an open <think> section now
        self.thinking_tokens = 0  # thinking tokens generated so far (the closing </think> not counted)
        self.forced_end = False  # True once the budget (not the model) closed the thinking
        self._after_newline = False

    def forced(self) -> int | None:
        """The token the next step must produce, or None to sample freely."""
        if not self.thinking or self.max_thinking_tokens is None:
            return None
        over = self.thinking_tokens - self.max_thinking_tokens
        if over >= 0 and (self._after_newline or over >= self.grace or self.max_thinking_tokens == 0):
            if not self._after_newline and self.line_end_id is not None and self.thinking_tokens > 0:
                return self.line_end_id  # the grace window ran out mid-line: end the line, then </think>
            return self.think_end_id
        return None

    def observe(self, token_id: int, forced: bool = False) -> bool:
        """Record a generated token; returns True if it belongs to the thinking (the closing `</think>` too)."""
        if not self.thinking:
            return False
        if token_id == self.think_end_id:
            self.thinking = False
            self.forced_end = forced
            return True
        self.thinking_tokens += 1
        budget = self.max_thinking_tokens
        self._after_newline = budget is not None and self.thinking_tokens >= budget and token_id in self.newline_ids
        return True


def newline_ids(vocab: dict[str, int] | Iterable[tuple[int, str]]) -> frozenset[int]:
    """Ids whose decoded text contains a newline, from {text: id} or (id, text) pairs (decoded, not raw BPE)."""
    pairs = ((i, t) for t, i in vocab.items()) if isinstance(vocab, dict) else vocab
    return frozenset(int(i) for i, t in pairs if "\n" in t)
