"""Incremental detokenization with stop strings: release text as tokens arrive, never past a stop string.

Works with any `decode(ids) -> str` function (the engine works on ids; the caller owns the tokenizer).
Text is decoded over a short window of recent ids so a long generation costs O(n), and a window whose text
ends in an incomplete UTF-8 sequence (U+FFFD) is held until the next token completes it. Text that could
still be the beginning of a stop string is held back until it is either a full match (generation stops,
the stop string is cut unless asked for) or cannot match any more.

Stop strings are matched by an Aho-Corasick automaton fed each new character once, so the cost is linear in
the output whatever the stop strings are. (Re-searching the held text for every stop string at every token
was quadratic: 16 stop strings of 2,000 characters plus one holding the whole output back took 170 s for
2,000 tokens, in the engine thread every request shares; issue 26.)
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
        self._matcher = StopMatcher(self.stop) if self.stop else None
        self._scanned = 0  # chars of `text` fed to the matcher

    def push(self, token_id: int, text: bool = True) -> str:
        """Add one token; return the newly released text (possibly empty). `text=False` (nobody reads the text
        as it comes): with no stop strings to watch, only record the id; `flush` decodes what is left."""
        if self.stopped is not None:
            return ""
        self.ids.append(int(token_id))
        if not text and self._matcher is None:
            return ""
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
        if self._matcher is not None:
            hit = self._matcher.feed(self.text, self._scanned)
            self._scanned = len(self.text)
            if hit is not None:
                i, s = hit
                self.stopped = s
                self.text = self.text[: i + len(s)] if self.include_stop else self.text[:i]
                end = len(self.text)
            elif not final:
                end -= self._matcher.held
        out = self.text[self.released:end]
        self.released = max(self.released, end)
        return out


class StopMatcher:
    """Aho-Corasick over the stop strings, fed text once: finds the earliest-starting stop string that ends in
    the newly fed text, and knows how much of the text's end could still begin one (`held`)."""

    def __init__(self, stops: Sequence[str]):
        goto: list[dict[str, int]] = [{}]
        ends: list[int] = [0]  # length of the stop string spelled by the state (0: none)
        depth = [0]
        for s in stops:
            state = 0
            for c in s:
                nxt = goto[state].get(c)
                if nxt is None:
                    nxt = goto[state][c] = len(goto)
                    goto.append({})
                    ends.append(0)
                    depth.append(depth[state] + 1)
                state = nxt
            ends[state] = len(s)
        # fail[state]: the longest proper suffix of the state's text that is also a state; longest[state]: the
        # longest stop string that is a suffix of the state's text (0: none), both in breadth-first order
        fail, longest = [0] * len(goto), list(ends)
        queue = list(goto[0].values())
        for state in queue:
            for c, nxt in goto[state].items():
                f = fail[state]
                while f and c not in goto[f]:
                    f = fail[f]
                fail[nxt] = goto[f][c] if c in goto[f] and goto[f][c] != nxt else 0
                longest[nxt] = max(ends[nxt], longest[fail[nxt]])
                queue.append(nxt)
        self._goto, self._fail, self._longest, self._depth = goto, fail, longest, depth
        self._state = 0

    @property
    def held(self) -> int:
        """Characters at the end of the fed text that are a proper prefix of some stop string."""
        return self._depth[self._state]

    def feed(self, text: str, start: int) -> tuple[int, str] | None:
        """Feed text[start:]; (index, stop string) of the earliest-starting stop string ending in it, if any
        (a tie goes to the shorter, which ends first)."""
        goto, fail, longest = self._goto, self._fail, self._longest
        state, best = self._state, None
        for pos in range(start, len(text)):
            c = text[pos]
            while state and c not in goto[state]:
                state = fail[state]
            state = goto[state].get(c, 0)
            n = longest[state]
            if n and (best is None or pos - n + 1 < best[0]):
                best = (pos - n + 1, text[pos - n + 1:pos + 1])
        self._state = state
        return best
