"""The Document record that flows through curation, and the text measures every step shares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_WORD_RE = re.compile(r"\w+")


@dataclass(slots=True)
class Document:
    """One document: the input `id` and `text`, its `source`, and everything else under `meta`."""

    id: str
    text: str
    source: str
    meta: dict = field(default_factory=dict)


@dataclass(slots=True)
class Malformed:
    """An input record that could not become a Document; it is counted and written to removed/, never dropped."""

    id: str
    source: str
    # invalid_utf8 | invalid_unicode | invalid_json | not_an_object | missing_text | empty_text | oversized |
    # decompression_bomb | unreadable_file | not_html
    reason: str
    raw: str  # the input as read, or only its head when it is too large to hold
    detail: str = ""
    size: int | None = None  # bytes of the record (oversized) or of what was read before a cap stopped it
    path: str = ""  # the input file (printable), where the id does not already say it


def approx_tokens(text: str) -> int:
    """Tokens as word and punctuation pieces: a tokenizer-free estimate (BPE counts run ~1.2-1.4x this)."""
    return len(_TOKEN_RE.findall(text))


def words_lower(text: str) -> list[str]:
    """Lower-cased alphanumeric words: the unit of dedup shingles and decontamination n-grams."""
    return _WORD_RE.findall(text.lower())
