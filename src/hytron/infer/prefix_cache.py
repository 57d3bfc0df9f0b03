"""Prefix caching for hybrid state: reuse a shared prompt prefix's attention KV and Mamba conv/SSM state.

A KV-cache trick alone cannot share a prefix of a hybrid model: a Mamba layer's state is a running summary of
every token so far, not a per-token cache, and it cannot be truncated to an earlier position. So the cache keeps
state at chosen positions only:
  - **blocks** of `block_size` tokens, keyed as vLLM's block hashing does (block i by the hash chain
    h_i = H(h_{i-1}, tokens of block i), so a key names the whole prefix up to the block's end); a block holds the
    attention KV of its own positions ((Hkv, B, Dh) per attention layer) and a snapshot of every Mamba layer's
    conv window and SSM state *after* it. The engine's prefill forwards end at block boundaries, where the blocks
    are stored. Blocks filled in from a finished sequence (below) hold KV only: links of the chain, not places
    to resume from;
  - **ends**: the state one token before the end of a prompt (the engine's prefill stops there to store it:
    the same prompt sent again, whose last token must be fed for its logits, resumes there, as llama.cpp's
    server does with a slot's prompt), and at the end of a finished sequence (prompt + answer, the last sampled
    token excepted: never fed), so the next turn of a chat, whose prompt is the conversation so far, resumes
    where the last one stopped. An end entry follows the last full block before it and holds the
    KV of the positions after that block, the Mamba state at its end, and its tokens (checked on lookup).
A new prompt walks its chain from block 1 while blocks exist, and resumes from the furthest place with a Mamba
state: the deepest block that has one, or a longer end entry whose tokens the prompt continues. It restores KV
0..n from the blocks (and end entry) on the way and the Mamba state there, and prefills only the rest. The last
prompt token is always prefilled (its logits give the first sampled token), so a hit covers at most
len(prompt) - 1 tokens. With speculative decoding, entries also keep the model's last hidden states at their
positions, from which the engine rebuilds the MTP head's cache (one pass of the head, not of the model).

Exactness: the restored state is the state the same forwards computed; the only difference from a prefill
without the cache is where the prefill's forwards are split (chunked SSD scan with an initial state vs one
scan), which changes logits by float rounding only (tests: tests/infer/test_prefix_cache.py).

Memory is bounded by `max_bytes` (entries' tensors), evicting the least recently used entries. A hit touches its
entries last-to-first, so a chain's first blocks are the most recent and a chain is evicted from its tail (an
entry whose parent is gone can never be reached again, and ages out). Single-threaded, as the engine.
"""

from __future__ import annotations

import collections
import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hytron.model.cache import HybridCache, KVState, MambaState

BLOCK_SIZE = 128  # tokens per block (default): each holds one Mamba snapshot


@dataclass
class _Entry:
    """A block or an end: per layer, the attention (k, v) of its L positions and the Mamba state after them."""

    kv: list[tuple[Tensor, Tensor] | None]  # attention layers: (Hkv, L, Dh) k, v
    state: list[tuple[Tensor, Tensor] | None] | None  # Mamba layers: conv (C, K-1), ssm (H, P, N); None: KV only
    hidden: Tensor | None  # (L, d) the model's last hidden states there (speculation), or None
    nbytes: int
    tail: tuple[int, ...] = ()  # an end entry's tokens (after the block it follows)
    follows: bytes | None = None  # an end entry's block key (b"" before the first block)


@dataclass
class Hit:
    """What `lookup` found: `tokens` to restore, from `entries` in position order (the last holds the state)."""

    tokens: int = 0
    entries: list[_Entry] = field(default_factory=list)

    @property
    def hidden(self) -> Tensor:
        """(tokens, d) the hidden states of the restored positions (entries stored with them)."""
        return torch.cat([e.hidden for e in self.entries])


class PrefixCache:
    """Attention KV and Mamba state snapshots of prompt prefixes (blocks + ends), LRU within a byte budget."""

    def __init__(self, max_bytes: int, block_size: int = BLOCK_SIZE, with_hidden: bool = False):
        """`with_hidden`: every entry must keep the model's hidden states (speculation); stores without are
        skipped."""
        if max_bytes < 0 or block_size < 1:
            raise ValueError(f"prefix cache: max_bytes must be >= 0 and block_size >= 1, got {max_bytes}, "
                             f"{block_size}")
        self.max_bytes, self.block_size, self.with_hidden = max_bytes, block_size, with_hidden
        self._entries: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()  # LRU first
        self._ends: dict[bytes, set[bytes]] = {}  # block key -> keys of the end entries that follow it
        self.bytes = 0
        self._last_chain: tuple[Sequence[int] | None, list[bytes]] = (None, [])
        # queries (lookups), queried_tokens, hits (lookups that reused a prefix), hit_tokens, stored (entries),
        # evictions (entries evicted to stay within max_bytes)
        self.stats = collections.Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def next_boundary(self, n: int) -> int:
        """The first block boundary after position n (a prefill forward from n ends there, to store its block)."""
        return (n // self.block_size + 1) * self.block_size

    def chain(self, ids: Sequence[int], blocks: int) -> list[bytes]:
        """The keys of the first `blocks` full blocks of `ids`: each hashes its parent's key and its tokens. The
        last sequence's keys are kept, so a prefill storing block after block of one prompt (the same object,
        never changed) hashes each block once."""
        last, known = self._last_chain
        keys = known[:blocks] if last is ids else []
        b = self.block_size
        for i in range(len(keys), blocks):
            parent = keys[-1] if keys else b""
            keys.append(hashlib.blake2b(parent + array("q", ids[i * b:(i + 1) * b]).tobytes(),
                                        digest_size=16).digest())
        if last is not ids or len(keys) > len(known):
            self._last_chain = (ids, keys)
        return list(keys)

    def lookup(self, ids: Sequence[int]) -> Hit:
        """The longest cached prefix of `ids` shorter than `ids` that has a Mamba state to resume from."""
        b, entries = self.block_size, self._entries
        keys = self.chain(ids, (len(ids) - 1) // b)
        m = 0  # blocks present
        while m < len(keys) and keys[m] in entries:
            m += 1
        j = m  # the deepest with a state
        while j and entries[keys[j - 1]].state is None:
            j -= 1
        best, found = j * b, keys[:j]
        for f in range(m, -1, -1):  # end entries after block f end before block f + 1 does
            if (f + 1) * b <= best:
                break
            for key in self._ends.get(keys[f - 1] if f else b"", ()):
                tail = entries[key].tail
                end = f * b + len(tail)
                if best < end < len(ids) and tuple(ids[f * b:end]) == tail:
                    best, found = end, keys[:f] + [key]
        self._touch(found)
        self.stats.update(queries=1, queried_tokens=len(ids))
        if best:
            self.stats.update(hits=1, hit_tokens=best)
        return Hit(best, [entries[k] for k in found])

    def restore(self, hit: Hit, cache: HybridCache, row: int = 0) -> None:
        """Put the prefix of `hit` (from `lookup`) into row `row` of `cache`, as if it had been prefilled."""
        n = hit.tokens
        cache.reserve(n + 1)
        cache.reset(row)
        for i, layer in enumerate(cache.layers):
            if isinstance(layer, KVState):
                layer.k[row, :, :n] = torch.cat([e.kv[i][0] for e in hit.entries], dim=1)
                layer.v[row, :, :n] = torch.cat([e.kv[i][1] for e in hit.entries], dim=1)
            elif isinstance(layer, MambaState):
                layer.conv[row], layer.ssm[row] = hit.entries[-1].state[i]
        cache.lengths[row] = n

    def store(self, ids: Sequence[int], cache: HybridCache, row: int = 0, hidden: Tensor | None = None) -> None:
        """Row `row` of `cache` has just been fed `ids[:n]`: keep its state there. At a block boundary, the block
        that ends at n (its KV, the Mamba state now, and `hidden`: (B, d) hidden states of its positions); else
        an end entry after the last full block (KV and `hidden` of the positions after it), with the blocks before
        it filled in as KV only where missing. Nothing is kept where it could not be reached (a missing parent)."""
        n, b = int(cache.lengths[row]), self.block_size
        if n == 0 or len(ids) < n:
            raise ValueError(f"prefix cache: store needs a fed cache and its ids, got {n} tokens and {len(ids)} ids")
        f = n // b
        if hidden is not None and hidden.size(0) != n - (f - 1 if n % b == 0 else f) * b:
            raise ValueError(f"prefix cache: hidden states for {hidden.size(0)} positions, expected those after "
                             "the last block boundary")
        if self.with_hidden and hidden is None:
            return
        keys = self.chain(ids, f)
        if n % b == 0:
            old = self._entries.get(keys[-1])
            if old is None or old.state is None:  # new, or a KV-only block gaining its state
                self._add(keys[-1], self._snapshot(cache, row, n - b, n, hidden), keys[-2] if f > 1 else None)
            self._touch(keys)
            return
        for i, key in enumerate(keys):  # fill in missing blocks, KV only (there is no state at their ends)
            if key in self._entries:
                continue
            kv_only = self._snapshot(cache, row, i * b, (i + 1) * b, None, state=False)
            if self.with_hidden or not self._add(key, kv_only, keys[i - 1] if i else None):
                return
        tail = tuple(int(t) for t in ids[f * b:n])
        follows = keys[-1] if f else b""
        key = hashlib.blake2b(b"end" + follows + array("q", tail).tobytes(), digest_size=16).digest()
        if key not in self._entries:
            entry = self._snapshot(cache, row, f * b, n, hidden)
            entry.tail, entry.follows = tail, follows
            if self._add(key, entry, keys[-1] if f else None):
                self._ends.setdefault(follows, set()).add(key)
        self._touch(keys + [key])

    def _snapshot(self, cache: HybridCache, row: int, start: int, end: int, hidden: Tensor | None,
                  state: bool = True) -> _Entry:
        """Copies of row `row`'s KV at positions start..end, its Mamba states (if `state`), and `hidden`."""
        kv = [(layer.k[row, :, start:end].clone(), layer.v[row, :, start:end].clone())
              if isinstance(layer, KVState) else None for layer in cache.layers]
        mamba = [(layer.conv[row].clone(), layer.ssm[row].clone()) if isinstance(layer, MambaState) else None
                 for layer in cache.layers] if state else None
        hidden = hidden.clone() if hidden is not None else None
        tensors = [t for pairs in (kv, mamba or []) for pair in pairs if pair is not None for t in pair]
        nbytes = sum(t.numel() * t.element_size() for t in tensors + ([hidden] if hidden is not None else []))
        return _Entry(kv, mamba, hidden, nbytes)

    def _add(self, key: bytes, entry: _Entry, parent: bytes | None) -> bool:
        """Insert (or replace) an entry, evicting least recently used ones to stay within max_bytes; False if it
        does not fit or its `parent` block went meanwhile (it could never be reached)."""
        if entry.nbytes > self.max_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        while self.bytes + entry.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.stats["evictions"] += 1
        if parent is not None and parent not in self._entries:
            return False
        self._entries[key] = entry
        self.bytes += entry.nbytes
        self.stats["stored"] += 1
        return True

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.nbytes
        if entry.follows is not None:
            self._ends[entry.follows].discard(key)
            if not self._ends[entry.follows]:
                del self._ends[entry.follows]

    def clear(self) -> None:
        self._entries.clear()
        self._ends.clear()
        self.bytes = 0

    def _touch(self, keys: list[bytes]) -> None:
        """Mark a chain's entries used, its first block last (the most recent), so eviction takes tails first."""
        for key in reversed(keys):
            if key in self._entries:
                self._entries.move_to_end(key)
