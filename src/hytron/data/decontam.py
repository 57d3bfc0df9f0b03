"""Decontamination: remove documents that contain evaluation items, by word n-gram overlap.

An eval item is the question/problem/prompt/text field of a JSONL record. Items of at least `n` words are
indexed as their word n-grams, and a document is contaminated by one when it contains at least
`min_overlap` of them (a copied passage); shorter items (questions, arithmetic problems) must appear whole.
Tokens are lower-case words and numbers plus the operators + - * / = (so "347 + 589" differs from
"347 - 589").
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

_TOKEN = re.compile(r"[a-z0-9]+|[+*/=-]")
_FIELDS = ("question", "problem", "prompt", "text")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@dataclass
class _Item:
    id: str
    need: int  # n-gram hits needed
    total: int  # n-grams the item has


class EvalIndex:
    """N-gram index over evaluation items; `check(text)` names the item a document leaks, if any."""

    def __init__(self, items: list[tuple[str, str]], n: int = 13, min_overlap: float = 0.8):
        self.n = n
        self.items: list[_Item] = []
        self.long: dict[tuple, list[int]] = {}  # n-gram -> items of n or more words
        self.short: dict[tuple, list[tuple[tuple, int]]] = {}  # first two words -> (whole item, index)
        for item_id, text in items:
            toks = tokens(text)
            if len(toks) < 2:  # a one-word item would match everywhere; it cannot be decontaminated by n-grams
                continue
            k = len(self.items)
            if len(toks) >= n:
                grams = {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}
                self.items.append(_Item(item_id, max(1, math.ceil(min_overlap * len(grams))), len(grams)))
                for g in grams:
                    self.long.setdefault(g, []).append(k)
            else:
                self.items.append(_Item(item_id, 1, 1))
                self.short.setdefault(tuple(toks[:2]), []).append((tuple(toks), k))

    @classmethod
    def from_files(cls, paths: list[str | Path], n: int = 13, min_overlap: float = 0.8) -> EvalIndex:
        items = []
        for p in paths:
            path = Path(p)
            if not path.is_file():
                raise FileNotFoundError(f"decontam.eval_files: {path} not found")
            with path.open(encoding="utf-8") as f:
                for line_no, line in enumerate(f):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"decontam.eval_files: {path}:{line_no + 1} is not JSON: {e}") from None
                    field = next((f for f in _FIELDS if isinstance(rec.get(f), str)), None)
                    if field is None:
                        raise ValueError(f"decontam.eval_files: {path}:{line_no + 1} has none of {_FIELDS}")
                    items.append((str(rec.get("id", f"{path.name}:{line_no}")), rec[field]))
        return cls(items, n, min_overlap)

    def __len__(self) -> int:
        return len(self.items)

    def check(self, text: str) -> tuple[str, float] | None:
        """(item id, share of the item's n-grams found) for the first item the text contains, else None."""
        toks = tokens(text)
        hits: dict[int, int] = {}
        n = self.n
        if self.long:
            for g in {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}:
                for k in self.long.get(g, ()):
                    hits[k] = hits.get(k, 0) + 1
        if self.short:  # short items: look only where a document bigram starts one
            for i in range(len(toks) - 1):
                for whole, k in self.short.get((toks[i], toks[i + 1]), ()):
                    if tuple(toks[i:i + len(whole)]) == whole:
                        hits[k] = max(hits.get(k, 0), 1)
        for k in sorted(hits):
            item = self.items[k]
            if hits[k] >= item.need:
                return item.id, hits[k] / item.total
        return None
