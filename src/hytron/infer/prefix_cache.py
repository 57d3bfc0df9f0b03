"""Prefix caching for hybrid state: reuse a shared prompt prefix's attention KV and Mamba conv/SSM state.

A KV-cache trick alone cannot share a prefix of a hybrid model: a Mamba layer's state is a running summary of
every token so far, not a per-token cache, and it cannot be truncated to an earlier position. So the prompt is
cut into blocks of `block_size` tokens (as vLLM's block hashing: block i is keyed by a hash chain
h_i = H(h_{i-1}, tokens of block i), so a key names the whole prefix up to the block's end), and the entry of
block i holds
  - the attention KV of the block's own positions, per attention layer ((Hkv, B, Dh) keys and values), and
  - a snapshot of every Mamba layer's conv window and SSM state *after* the block (the state at its end),
taken while the engine prefills (its prefill forwards end at block boundaries while the cache is on). A new
prompt walks its chain from block 1 while entries exist; the longest run of m blocks restores KV 0..mB from
blocks 1..m and the Mamba state from block m, and only the rest of the prompt is prefilled. At least the last
prompt token is always prefilled (its logits give the first sampled token), so a hit covers at most
len(prompt) - 1 tokens rounded down to a block.

Exactness: the restored state is the state the same forwards computed; the only difference from a prefill
without the cache is where the prefill's forwards are split (chunked SSD scan with an initial state vs one
scan), which changes logits by float rounding only (tests: tests/infer/test_prefix_cache.py).

Memory is bounded by `max_bytes` (entries' tensors), evicting least recently used blocks. A hit touches its
blocks last-to-first, so a chain's first blocks are the most recent and a chain is evicted from its tail
(an entry whose parent is gone can never be reached again, and ages out). Single-threaded, as the engine.
"""

from __future__ import annotations

import collections
import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hytron.model.cache import HybridCache, KVState, MambaState

BLOCK_SIZE = 128  # tokens per block (default): a hit is a multiple of it; each block holds one Mamba snapshot


@dataclass
class _Block:
    """One cached block: per layer, the (k, v) of its positions (attention) or the state after it (Mamba)."""

    layers: list[tuple[Tensor, Tensor] | None]  # attention: (Hkv, B, Dh) k, v; Mamba: conv (C, K-1), ssm (H, P, N)
    nbytes: int
    hidden: Tensor | None = None  # (B, d) the model's last hidden states at the block's positions (speculation)


class PrefixCache:
    """Block-hashed store of attention KV and Mamba state snapshots for prompt prefixes, LRU within a byte budget."""

    def __init__(self, max_bytes: int, block_size: int = BLOCK_SIZE):
        if max_bytes < 0 or block_size < 1:
            raise ValueError(f"prefix cache: max_bytes must be >= 0 and block_size >= 1, got {max_bytes}, "
                             f"{block_size}")
        self.max_bytes, self.block_size = max_bytes, block_size
        self._blocks: collections.OrderedDict[bytes, _Block] = collections.OrderedDict()  # LRU first
        self.bytes = 0
        # queries (lookups), queried_tokens, hits (lookups that reused >= 1 block), hit_tokens, stored_blocks,
        # evictions (blocks evicted to stay within max_bytes)
        self.stats = collections.Counter()

    def __len__(self) -> int:
        return len(self._blocks)

    def next_boundary(self, n: int) -> int:
        """The first block boundary after position n (a prefill forward from n ends there, to store its block)."""
        return (n // self.block_size + 1) * self.block_size

    def chain(self, ids: Sequence[int], blocks: int) -> list[bytes]:
        """The keys of the first `blocks` full blocks of `ids`: each hashes its parent's key and its tokens."""
        keys, parent, b = [], b"", self.block_size
        for i in range(blocks):
            parent = hashlib.blake2b(parent + array("q", ids[i * b:(i + 1) * b]).tobytes(), digest_size=16).digest()
            keys.append(parent)
        return keys

    def lookup(self, ids: Sequence[int]) -> tuple[int, list[_Block]]:
        """The longest cached block-aligned prefix of `ids` shorter than `ids`: (its token count, its blocks)."""
        usable = (len(ids) - 1) // self.block_size
        found = []
        for key in self.chain(ids, usable):
            block = self._blocks.get(key)
            if block is None:
                break
            found.append(key)
        self._touch(found)
        self.stats.update(queries=1, queried_tokens=len(ids))
        if found:
            self.stats.update(hits=1, hit_tokens=len(found) * self.block_size)
        return len(found) * self.block_size, [self._blocks[k] for k in found]

    def restore(self, blocks: list[_Block], cache: HybridCache, row: int = 0) -> None:
        """Put the prefix of `blocks` (from `lookup`) into row `row` of `cache`, as if it had been prefilled."""
        n = len(blocks) * self.block_size
        cache.reserve(n + 1)
        cache.reset(row)
        for i, state in enumerate(cache.layers):
            if isinstance(state, KVState):
                state.k[row, :, :n] = torch.cat([b.layers[i][0] for b in blocks], dim=1)
                state.v[row, :, :n] = torch.cat([b.layers[i][1] for b in blocks], dim=1)
            elif isinstance(state, MambaState):
                state.conv[row], state.ssm[row] = blocks[-1].layers[i]
        cache.lengths[row] = n

    def store(self, ids: Sequence[int], cache: HybridCache, row: int = 0, hidden: Tensor | None = None) -> None:
        """Row `row` of `cache` has just been fed `ids[:n]` with n a multiple of the block size: keep block n/B
        (its KV and the Mamba state now, and `hidden` (B, d) if given), if its parent block is cached (else it
        could never be reached)."""
        n, b = int(cache.lengths[row]), self.block_size
        if n == 0 or n % b:
            raise ValueError(f"prefix cache: store needs a cache at a block boundary, got {n} tokens (block {b})")
        keys = self.chain(ids, n // b)
        if keys[-1] not in self._blocks and (len(keys) == 1 or keys[-2] in self._blocks):
            self._add(keys, self._snapshot(cache, row, n, hidden))
        self._touch(keys)

    def _snapshot(self, cache: HybridCache, row: int, n: int, hidden: Tensor | None) -> _Block:
        """Copies of the KV of positions n-B..n and of the Mamba states of row `row` (and of `hidden`)."""
        layers: list[tuple[Tensor, Tensor] | None] = []
        for state in cache.layers:
            if isinstance(state, KVState):
                layers.append((state.k[row, :, n - self.block_size:n].clone(),
                               state.v[row, :, n - self.block_size:n].clone()))
            elif isinstance(state, MambaState):
                layers.append((state.conv[row].clone(), state.ssm[row].clone()))
            else:
                layers.append(None)
        tensors = [t for pair in layers if pair is not None for t in pair]
        if hidden is not None:
            hidden = hidden.clone()
            tensors.append(hidden)
        return _Block(layers, sum(t.numel() * t.element_size() for t in tensors), hidden)

    def _add(self, keys: list[bytes], block: _Block) -> None:
        """Insert the block keyed keys[-1], evicting least recently used blocks to stay within max_bytes."""
        if block.nbytes > self.max_bytes:
            return
        while self.bytes + block.nbytes > self.max_bytes:
            _, old = self._blocks.popitem(last=False)
            self.bytes -= old.nbytes
            self.stats["evictions"] += 1
        if len(keys) > 1 and keys[-2] not in self._blocks:  # its parent just went: it could never be reached
            return
        self._blocks[keys[-1]] = block
        self.bytes += block.nbytes
        self.stats["stored_blocks"] += 1

    def clear(self) -> None:
        self._blocks.clear()
        self.bytes = 0

    def _touch(self, keys: list[bytes]) -> None:
        """Mark a chain's blocks used, its first block last (the most recent), so eviction takes tails first."""
        for key in reversed(keys):
            if key in self._blocks:
                self._blocks.move_to_end(key)
