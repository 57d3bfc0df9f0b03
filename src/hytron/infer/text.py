"""Incremental detokenization with stop strings: release text as tokens arrive, never past a stop string.

Works with any `decode(ids) -> str` function (the engine works on ids; the caller owns the tokenizer).
Text is decoded over a short window of recent ids so a long generation costs O(n), and a window whose text
ends in an incomplete UTF-8 sequence (U+FFFD) is held until the next token completes it. Text that could
still be the beginning of a stop string is held back until it is either a full match (generation stops,
the stop string is cut unless asked for) or cannot match any more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class TextStream:
    """Turns a stream of token ids into released text deltas, stopping at the first stop string."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = (),
                 include_stop: bool = False):
        self.decode = decode
        self.stop = tuple(stop)
        self.include_stop = include_stop
        self.ids: list[int] = []
        self._prefix = 0  # window start: decode(ids[_prefix:]) is stable text
        self._read = 0  # ids before this are already turned into text
        self.text = ""  # all decoded text (released or held)
        self.released = 0  # chars of `text` handed out
        self.stopped: str | None = None  # the stop string matched, once matched

    def push(self, token_id: int) -> str:
        """Add one token; return the newly released text (possibly empty)."""
        if self.stopped is not None:
            return ""
        self.ids.append(int(token_id))
        before = self.decode(self.ids[self._prefix:self._read])
        after = self.decode(self.ids[self._prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end of generation: release everything still held (an incomplete character included)."""
        if self.stopped is None and self._read < len(self.ids):
            tail = self.decode(self.ids[self._prefix:])[len(self.decode(self.ids[self._prefix:self._read])):]
            self.text += tail
            self._read = len(self.ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped is not None:
            return ""
        end = len(self.text)
        if self.stop:
            # search from where an unreleased match could start
            longest = max(len(s) for s in self.stop)
            start = max(0, self.released - longest + 1)
            hits = [(self.text.find(s, start), s) for s in self.stop]
            hits = [(i, s) for i, s in hits if i >= 0]
            if hits:
                i, s = min(hits)
                self.stopped = s
                self.text = self.text[: i + len(s)] if self.include_stop else self.text[:i]
                end = len(self.text)
            elif not final:
                end -= _held_suffix(self.text, self.stop, self.released)
        out = self.text[self.released:end]
        self.released = max(self.released, end)
        return out


def _held_suffix(text: str, stops: Sequence[str], released: int) -> int:
    """Length of the longest unreleased suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text) - released), best, -1):
            if s.startswith(text[len(text) - k:]):
                best = k
                break
    return best
