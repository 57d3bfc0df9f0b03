"""Stop strings (issue 26, item 1): matching is incremental, linear in the output, and agrees with a plain search.

Before: every token re-searched the held-back text for every stop string and tested every suffix of it, so 16
long stop strings plus one that held the whole output back made a 2,000-token request take 170 s (and slowed
every other request in the engine thread).
"""

import random
import time
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from hytron.infer import TextStream


def chars(ids: Sequence[int]) -> str:
    """A decode function where id i is the character chr(i): text and ids line up one to one."""
    return "".join(map(chr, ids))


def reference(text_pieces: list[str], stops: list[str], include_stop: bool) -> tuple[str, str | None]:
    """What a stream must produce: the text up to the earliest-starting stop string that is complete once the
    piece it ends in has arrived (ties: the shorter one), and that stop string."""
    text = ""
    for piece in text_pieces:
        start = max(0, len(text) - max(map(len, stops)) + 1)
        text += piece
        hits = sorted((i, s) for s in stops if (i := text.find(s, start)) >= 0)
        if hits:
            i, s = hits[0]
            return text[:i + len(s)] if include_stop else text[:i], s
    return text, None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text("ab\n", min_size=1, max_size=4), min_size=1, max_size=30),
       st.lists(st.text("ab\n", min_size=1, max_size=5), min_size=1, max_size=4), st.booleans())
def test_streamed_text_matches_a_plain_search(pieces, stops, include_stop):
    vocab = sorted(set(pieces))  # each piece is one token of one or more characters
    stream = TextStream(lambda ids: "".join(vocab[i] for i in ids), stops, include_stop)
    released = []
    for piece in pieces:
        released.append(stream.push(vocab.index(piece)))
        if stream.stopped is not None:
            break
    released.append(stream.flush())
    assert ("".join(released), stream.stopped) == reference(pieces, stops, include_stop)


def test_held_text_is_released_as_soon_as_no_stop_can_match():
    stream = TextStream(chars, ["abc", "abd"])
    assert stream.push(ord("x")) == "x"
    assert stream.push(ord("a")) == ""  # could start abc/abd
    assert stream.push(ord("b")) == ""
    assert stream.push(ord("a")) == "ab"  # "aba": only the last "a" can still start a stop
    assert stream.push(ord("b")) + stream.push(ord("d")) == ""
    assert stream.stopped == "abd" and stream.flush() == ""


def test_long_stop_strings_cost_linear_time():
    """16 stop strings of 2,000 characters, plus one that holds the whole output back: 4,000 tokens stream in
    well under a second (the quadratic search took minutes)."""
    rng = random.Random(0)
    output = "".join(rng.choice("abcdefgh ") for _ in range(4000))
    stops = ["".join(rng.choice("abcdefgh ") for _ in range(2000)) + "!" for _ in range(16)]
    stops.append(output + "!")  # never completes, so every character stays held back
    stream = TextStream(chars, stops)
    t0 = time.perf_counter()
    released = "".join(stream.push(ord(c)) for c in output)
    seconds = time.perf_counter() - t0
    assert released == "" and stream.flush() == output
    assert seconds < 2.0, f"{seconds:.1f}s for 4,000 tokens"
