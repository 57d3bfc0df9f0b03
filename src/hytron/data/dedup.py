"""Exact dedup (xxh3-128 of normalised text) and fuzzy dedup (MinHash-LSH, then true Jaccard, then union-find).

Per document, `DocHashes.of(text)` computes what the global decision needs: the exact key, the sorted
unique 64-bit hashes of its word n-gram shingles, and a MinHash signature (uint32[bands*rows]). The global
step (`exact_duplicates`, `fuzzy_duplicates`) sees documents in input order and always keeps the earliest
copy, so the result does not depend on how the work was split.

Shingle hashing is vectorised: each distinct word is hashed once (xxh3-64, cached), and an n-gram's hash
is a polynomial combination of its word hashes in uint64 arithmetic. MinHash uses the multiply-shift
family h(x) = (a*x + b) >> 32 with odd random a; candidates from `bands` bands of `rows` rows are
verified against the exact Jaccard of the shingle sets, so LSH false positives are never removed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import xxhash

from hytron.data.document import words_lower

_WS = re.compile(r"\s+")
_WORD_CACHE: dict[str, int] = {}
_POLY = np.uint64(0x9E3779B97F4A7C15)


def exact_key(text: str) -> str:
    """Hash of the text with case and whitespace normalised: equal keys = exact duplicates."""
    return xxhash.xxh3_128_hexdigest(_WS.sub(" ", text.strip().lower()).encode("utf-8", "surrogatepass"))


def _word_hashes(words: list[str]) -> np.ndarray:
    cache = _WORD_CACHE
    if len(cache) > 2_000_000:
        cache.clear()
    out = []
    for w in words:
        h = cache.get(w)
        if h is None:
            h = cache[w] = xxhash.xxh3_64_intdigest(w.encode("utf-8", "surrogatepass"))
        out.append(h)
    return np.array(out, dtype=np.uint64)


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """Sorted unique uint64 hashes of the text's word n-grams (the whole text if it has fewer than n words)."""
    wh = _word_hashes(words_lower(text))
    if len(wh) == 0:
        return np.zeros(1, dtype=np.uint64)
    k = max(1, len(wh) - n + 1)
    m = min(n, len(wh))
    acc = np.zeros(k, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(m):
            acc = acc * _POLY + wh[j:j + k]
    return np.unique(acc)


class MinHasher:
    """MinHash signatures of shingle-hash sets: uint32[num_perm], deterministic for a seed."""

    def __init__(self, num_perm: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            h = (shingles[:, None] * self.a[None, :] + self.b[None, :]) >> np.uint64(32)
        return h.min(axis=0).astype(np.uint32)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted-unique hash arrays."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


@dataclass
class Duplicate:
    index: int  # the removed document (position in the global order)
    kept: int  # the document it duplicates, which is kept
    score: float  # 1.0 for exact, the verified Jaccard for fuzzy


def exact_duplicates(keys: list[str | None]) -> list[Duplicate]:
    """Every document whose key equals an earlier document's key (None = not taking part)."""
    first: dict[str, int] = {}
    out = []
    for i, k in enumerate(keys):
        if k is None:
            continue
        if k in first:
            out.append(Duplicate(i, first[k], 1.0))
        else:
            first[k] = i
    return out


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int, max_bucket: int = 50) -> set[tuple[int, int]]:
    """Pairs (i < j) that share at least one LSH band. Buckets larger than `max_bucket` are linked as a star
    around their first member instead of all pairs (bounded cost; union-find still joins them)."""
    pairs: set[tuple[int, int]] = set()
    n = signatures.shape[0]
    if n < 2:
        return pairs
    for band in range(bands):
        cols = np.ascontiguousarray(signatures[:, band * rows:(band + 1) * rows])
        keys = cols.view(np.dtype((np.void, cols.dtype.itemsize * rows))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        multi = np.nonzero(counts[inverse] > 1)[0]
        groups: dict[int, list[int]] = defaultdict(list)
        for i in multi.tolist():
            groups[int(inverse[i])].append(i)
        for members in groups.values():
            if len(members) <= max_bucket:
                pairs.update((members[x], members[y]) for x in range(len(members))
                             for y in range(x + 1, len(members)))
            else:
                pairs.update((members[0], m) for m in members[1:])
    return pairs


def fuzzy_duplicates(signatures: np.ndarray, shingles: list[np.ndarray], bands: int, rows: int,
                     threshold: float, active: np.ndarray | None = None) -> list[Duplicate]:
    """Near-duplicates among `active` documents: LSH candidates whose true Jaccard >= threshold, grouped with
    union-find; each group keeps its earliest member. `score` is the Jaccard of the pair that joined it."""
    idx = np.arange(len(shingles)) if active is None else np.nonzero(active)[0]
    if len(idx) < 2:
        return []
    parent = list(range(len(idx)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    best: dict[int, float] = {}
    for i, j in sorted(candidate_pairs(signatures[idx], bands, rows)):
        sim = jaccard(shingles[idx[i]], shingles[idx[j]])
        if sim >= threshold:
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)  # the root is always the earliest member
            best[j] = max(best.get(j, 0.0), sim)
            best[i] = max(best.get(i, 0.0), sim)
    out = []
    for k in range(len(idx)):
        r = find(k)
        if r != k:
            out.append(Duplicate(int(idx[k]), int(idx[r]), best.get(k, threshold)))
    return out
