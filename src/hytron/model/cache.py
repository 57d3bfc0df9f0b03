"""Per-sequence inference state for every block: conv + SSM state for Mamba, a KV cache for attention.

One `HybridCache` serves a batch of rows (slots). Rows may hold different numbers of tokens: attention
masks each row to its own length, and Mamba's state does not depend on length at all. The serving
engine prefills a request in a batch-1 cache and `insert`s it into a free slot of the batched cache.

Speculative decoding needs to take tokens back. Attention KV is simply truncated (`lengths` go back; entries
past a row's length are never read and are overwritten later). Mamba's state cannot be truncated, so a
forward with `track(True)` keeps the state after each of its tokens (conv: the K-1+L window inputs it saw,
SSM: L+1 states, computed together by `Mamba2.forward_tracked`), and `rollback(keep)` picks the one after the
last kept token of each row. `snapshot` / `restore` copy and put back the (small) Mamba states and the lengths,
for a few draft steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class MambaState:
    conv: Tensor  # (b, conv_dim, K-1): the last K-1 pre-conv inputs [x | B | C]
    ssm: Tensor  # (b, H, P, N) in fp32: the SSM state after the last token
    # set by HybridCache.track: a multi-token forward also keeps every intermediate state (see rollback)
    track: bool = False
    conv_steps: Tensor | None = None  # (b, conv_dim, K-1+L): the window; state after token j = [..., j:j+K-1]
    ssm_steps: Tensor | None = None  # (b, L+1, H, P, N): index j = the state after the first j tokens


@dataclass
class KVState:
    k: Tensor  # (b, Hkv, capacity, Dh)
    v: Tensor  # (b, Hkv, capacity, Dh)


class HybridCache:
    """Inference state of a `HybridLM` for `batch_size` rows; `lengths[r]` tokens seen by row r."""

    def __init__(self, config, batch_size: int, device=None, dtype=torch.float32, capacity: int = 256,
                 pattern: str | None = None):
        """`pattern`: the blocks this cache serves (default `config.pattern`; the MTP head's own blocks
        take `config.mtp_pattern`)."""
        self.config = config
        self.dtype = dtype
        self.pattern = config.pattern if pattern is None else pattern
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.last_fed = 0
        self.layers: list[MambaState | KVState | None] = []
        c = config
        for ch in self.pattern:
            if ch == "M":
                self.layers.append(MambaState(
                    conv=torch.zeros(batch_size, c.conv_dim, c.conv_kernel - 1, dtype=dtype, device=device),
                    ssm=torch.zeros(batch_size, c.mamba_num_heads, c.mamba_head_dim, c.ssm_state_size,
                                    dtype=torch.float32, device=device)))
            elif ch == "*":
                shape = (batch_size, c.num_key_value_heads, capacity, c.head_dim)
                self.layers.append(KVState(k=torch.zeros(shape, dtype=dtype, device=device),
                                           v=torch.zeros(shape, dtype=dtype, device=device)))
            else:
                self.layers.append(None)

    @property
    def batch_size(self) -> int:
        return self.lengths.numel()

    @property
    def capacity(self) -> int:
        kv = [s for s in self.layers if isinstance(s, KVState)]
        return kv[0].k.size(2) if kv else 0

    def reserve(self, needed: int) -> None:
        """Grow every KV buffer (by doubling) so each row can hold `needed` tokens."""
        cap = self.capacity
        if not cap or needed <= cap:
            return
        new = cap
        while new < needed:
            new *= 2
        for s in self.layers:
            if isinstance(s, KVState):
                pad = new - cap
                s.k = torch.nn.functional.pad(s.k, (0, 0, 0, pad))
                s.v = torch.nn.functional.pad(s.v, (0, 0, 0, pad))

    def advance(self, n: int | Tensor) -> None:
        """Called by the model after all layers consumed `n` new tokens per row (a (b,) tensor: row r's own
        count, for right-padded rows; a forward like that cannot be rolled back)."""
        self.lengths += n
        self.last_fed = n if isinstance(n, int) else -1

    # ---- taking tokens back (speculative decoding) ---------------------------------------------------
    def track(self, on: bool = True) -> None:
        """With `on`, the next forward keeps the Mamba state after each of its tokens, for `rollback`."""
        for s in self.layers:
            if isinstance(s, MambaState):
                s.track, s.conv_steps, s.ssm_steps = on, None, None

    def rollback(self, keep: Tensor) -> None:
        """Keep only the first keep[r] (0..L) tokens of row r from the last forward of L tokens (run with
        `track(True)`), as if the others had never been fed; tracking ends. keep: (b,) long."""
        fed = self.last_fed
        if fed < 0:
            raise RuntimeError("rollback cannot follow a forward of right-padded rows")
        keep = keep.to(self.lengths.device)
        rows = torch.arange(self.batch_size, device=keep.device)
        one = int(keep[0]) if self.batch_size == 1 else None  # one row: slices instead of gathers
        for s in self.layers:
            if isinstance(s, MambaState):
                if s.ssm_steps is None:
                    raise RuntimeError("rollback needs the last forward to run with track(True)")
                k1 = s.conv.size(-1)
                if one is not None:
                    s.conv = s.conv_steps[:, :, one:one + k1].contiguous()
                    s.ssm = s.ssm_steps[:, one].contiguous()
                else:
                    idx = (keep[:, None] + torch.arange(k1, device=keep.device))[:, None, :].expand(
                        -1, s.conv.size(1), -1)
                    s.conv = s.conv_steps.gather(2, idx)
                    s.ssm = s.ssm_steps[rows, keep]
                s.track, s.conv_steps, s.ssm_steps = False, None, None
        self.lengths -= fed - keep

    def snapshot(self) -> tuple:
        """A copy of what a forward changes and `restore` needs: lengths and the Mamba states (KV is only
        appended to, past the lengths, so it needs no copy)."""
        return self.lengths.clone(), [(s.conv.clone(), s.ssm.clone()) if isinstance(s, MambaState) else None
                                      for s in self.layers]

    def restore(self, snap: tuple) -> None:
        lengths, states = snap
        self.lengths = lengths.clone()
        for s, saved in zip(self.layers, states):
            if saved is not None:
                s.conv, s.ssm = saved[0].clone(), saved[1].clone()

    # ---- slot management for batched serving -------------------------------------------------------
    def reset(self, rows) -> None:
        """Forget rows (a slot index or a list of them): zero their state and length."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device).reshape(-1)
        self.lengths[rows] = 0
        for s in self.layers:
            if isinstance(s, MambaState):
                s.conv[rows] = 0
                s.ssm[rows] = 0
            elif isinstance(s, KVState):
                s.k[rows] = 0
                s.v[rows] = 0

    def insert(self, slot: int, other: HybridCache, row: int = 0) -> None:
        """Copy row `row` of `other` (e.g. a freshly prefilled batch-1 cache) into `slot` of this cache."""
        n = int(other.lengths[row])
        self.reserve(n + 1)
        self.reset(slot)
        self.lengths[slot] = n
        for mine, theirs in zip(self.layers, other.layers):
            if isinstance(mine, MambaState):
                mine.conv[slot] = theirs.conv[row]
                mine.ssm[slot] = theirs.ssm[row]
            elif isinstance(mine, KVState):
                mine.k[slot, :, :n] = theirs.k[row, :, :n]
                mine.v[slot, :, :n] = theirs.v[row, :, :n]

    @staticmethod
    def by_source(rows: list[tuple[HybridCache | None, int]]) -> list[tuple[HybridCache, list[int], list[int]]]:
        """(cache, row) pairs grouped by their cache, in first-seen order: (cache, the pairs' positions in
        `rows`, their rows in that cache); pairs without a cache (None) are left out."""
        groups: dict[int, tuple[HybridCache, list[int], list[int]]] = {}
        for slot, (other, row) in enumerate(rows):
            if other is not None:
                _, slots, src = groups.setdefault(id(other), (other, [], []))
                slots.append(slot)
                src.append(row)
        return list(groups.values())

    def fill(self, rows: list[tuple[HybridCache | None, int]]) -> None:
        """Copy, into slots 0, 1, ... of this new (all-zero) cache, the given rows: (cache, row) pairs, or
        (None, _) for a sequence that has seen nothing yet (its slot stays zero). The rows of one source cache
        are copied together, a few index ops per layer whatever their number (`insert` is one row at a time):
        the engine rebuilds its batch this way each time requests join or leave. KV entries are copied up to the
        longest of a source's rows (past a row's own length they are never read)."""
        for other, slots, src in self.by_source(rows):
            dst_idx, src_idx = _index(slots, self.lengths.device), _index(src, other.lengths.device)
            n = int(other.lengths[src_idx].max())
            self.reserve(n + 1)
            self.lengths[dst_idx] = other.lengths[src_idx]
            for mine, theirs in zip(self.layers, other.layers):
                if isinstance(mine, MambaState):
                    mine.conv[dst_idx] = theirs.conv[src_idx]
                    mine.ssm[dst_idx] = theirs.ssm[src_idx]
                elif isinstance(mine, KVState) and n:
                    mine.k[dst_idx, :, :n] = theirs.k[src_idx, :, :n]
                    mine.v[dst_idx, :, :n] = theirs.v[src_idx, :, :n]

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held now: KV buffers (allocated capacity), SSM and conv states."""
        out = {"kv_cache": 0, "ssm_state": 0, "conv_state": 0}
        for s in self.layers:
            if isinstance(s, MambaState):
                out["conv_state"] += s.conv.numel() * s.conv.element_size()
                out["ssm_state"] += s.ssm.numel() * s.ssm.element_size()
            elif isinstance(s, KVState):
                out["kv_cache"] += 2 * s.k.numel() * s.k.element_size()
        out["total"] = sum(out.values())
        return out


def _index(ids: list[int], device) -> slice | Tensor:
    """Rows `ids` of a tensor's first dimension: a slice when they are consecutive (a view: no gather or
    scatter), else an index tensor."""
    if ids == list(range(ids[0], ids[0] + len(ids))):
        return slice(ids[0], ids[0] + len(ids))
    return torch.tensor(ids, device=device)
