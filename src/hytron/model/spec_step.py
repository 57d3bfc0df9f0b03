"""Static-shape steps for speculative decoding: verify K+1 tokens with the main model, draft K with the MTP head.

The counterparts of `hytron.model.kernels.decode_step` for speculation (`hytron.infer.speculative` describes the
method): no host synchronisation and no shape that depends on the rows' lengths, every cache tensor updated in
place or returned, so torch.compile compiles each once per model shape and batch size (the KV capacity is a dynamic
dimension) and inductor fuses their few hundred small ops, which bound a small model's steps on a CPU.

  verify_step  one forward of the main model over L tokens per row (attention over the whole KV buffer, masked
               past each query's position); returns the final-norm hidden states, the logits, and per Mamba layer
               the conv window and the L+1 SSM states (`Mamba2.forward_tracked`) that `HybridCache.rollback`
               picks from (the caller sets them on the cache and rolls back).
  draft_step   greedy drafting: the MTP head catches up on W positions per row (padded; each row keeps its first
               keep[r], the rest rolled back inside the step), then K-1 one-position steps, each fed the argmax of
               the previous one (with an additive bias: -inf on banned ids); the head's state after the catch-up is
               what is left (the K-1 steps are undone in place). Returns the K drafts per row. Positions before
               a row's last kept one only need the sequence mixers' KV/state: the position-wise blocks after the
               head's last mixer (its MLP) run on the last kept position alone.
  greedy_step  both in one call: draft, then verify [the last accepted token, the drafts].

Both read the KV buffers up to their capacity, so the caller reserves room for W (resp. L) more tokens per row.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from hytron.model import kernels
from hytron.model.cache import HybridCache, KVState, MambaState


def attend_static_multi(attn, x: Tensor, state: KVState, lengths: Tensor) -> Tensor:
    """L new tokens per row, x (b, L, d), written at positions lengths[r] + j and attended causally over the whole
    KV buffer (positions past each query's own masked): `Attention.forward` with a cache, in static shapes."""
    b, L, _ = x.shape
    hkv, d = attn.kv_heads, attn.head_dim
    r = attn.heads // hkv
    q = attn.q_proj(x).view(b, L, hkv, r, d).permute(0, 2, 3, 1, 4).reshape(b, hkv, r * L, d)  # head = kv·R + r
    pos = lengths[:, None] + torch.arange(L, device=x.device)  # (b, L)
    idx = pos[:, None, :, None].expand(b, hkv, L, d)
    state.k.scatter_(2, idx, attn.k_proj(x).view(b, L, hkv, d).transpose(1, 2).to(state.k.dtype))
    state.v.scatter_(2, idx, attn.v_proj(x).view(b, L, hkv, d).transpose(1, 2).to(state.v.dtype))
    k, v = state.k.to(q.dtype), state.v.to(q.dtype)  # (b, Hkv, capacity, Dh)
    scores = torch.matmul(q, k.transpose(-1, -2)) * d**-0.5  # (b, Hkv, R·L, capacity)
    hide = torch.arange(k.size(2), device=x.device)[None, None, :] > pos[:, :, None]  # (b, L, capacity)
    hide = hide[:, None, None].expand(b, 1, r, L, k.size(2)).reshape(b, 1, r * L, k.size(2))
    probs = torch.softmax(scores.masked_fill(hide, float("-inf")).float(), dim=-1)
    out = torch.matmul(probs.to(v.dtype), v)  # (b, Hkv, R·L, Dh)
    out = out.view(b, hkv, r, L, d).permute(0, 3, 1, 2, 4).reshape(b, L, attn.heads * d)
    return attn.o_proj(out)


def _tracked_blocks(blocks, cache: HybridCache, h: Tensor, last: Tensor | None = None
                    ) -> tuple[Tensor, list[tuple[Tensor, Tensor] | None]]:
    """h (b, L, d) through `blocks` over L new positions per row: attention writes its KV in place, Mamba
    returns (conv window, SSM states) per layer instead of updating its state. With `last` (b,), only the output
    at position last[r] of each row is wanted: the position-wise blocks after the last sequence mixer (attention
    or Mamba) run on that one position, (b, 1, d) returned."""
    tracked = []
    mixers = [i for i, block in enumerate(blocks) if block.kind in "*M"]
    for i, (block, state) in enumerate(zip(blocks, cache.layers)):
        if last is not None and mixers and i == mixers[-1] + 1:
            h = h[torch.arange(h.size(0), device=h.device), last][:, None]
        if block.kind == "*":
            h = h + attend_static_multi(block.mixer, block.norm(h), state, cache.lengths)
            tracked.append(None)
        elif block.kind == "M":
            out, window, steps = block.mixer.forward_tracked(block.norm(h), state.conv, state.ssm)
            h = h + out
            tracked.append((window, steps))
        else:
            h = block(h)
            tracked.append(None)
    return h, tracked


@torch.no_grad()
def verify_step(model, cache: HybridCache, tokens: Tensor) -> tuple[Tensor, Tensor, list]:
    """tokens (b, L) continuing every row -> hidden (b, L, d) after norm_f, logits (b, L, vocab), and per layer
    (conv window, SSM states) for Mamba (None elsewhere). KV is written and `cache.lengths` advanced by L in
    place; the Mamba states are not touched: set `conv_steps`/`ssm_steps` from the result and `rollback`."""
    h, tracked = _tracked_blocks(model.backbone.layers, cache, model.backbone.embeddings(tokens))
    cache.lengths += tokens.size(1)
    h = model.backbone.norm_f(h)
    return h, model.lm_head(h), tracked


@torch.no_grad()
def draft_step(model, cache: HybridCache, hidden: Tensor, tokens: Tensor, keep: Tensor, k: int,
               bias: Tensor | None = None) -> Tensor:
    """Greedy drafts of the MTP head (one module): hidden (b, W, d) main-model states at t, tokens (b, W) at t+1,
    of which row r keeps its first keep[r] >= 1 (the rest is padding, rolled back) -> drafts (b, k), long.
    `bias` (b, vocab) is added to the head's logits before the argmax (-inf bans an id). The head's cache ends
    holding the kept positions (depth 1 only)."""
    mtp = model.mtp
    blocks = mtp.layers[:mtp.blocks_per_module]
    first, last = blocks[0], blocks[-1]
    embed = model.backbone.embeddings
    b = hidden.size(0)
    rows = torch.arange(b, device=hidden.device)
    h = first.eh_proj(torch.cat([first.enorm(embed(tokens)), first.hnorm(hidden)], dim=-1))
    h, tracked = _tracked_blocks(blocks, cache, h, last=keep - 1)  # the position-wise tail on the last kept one
    for state, t in zip(cache.layers, tracked):  # roll the Mamba layers back to each row's kept positions
        if t is not None:
            window, steps = t
            k1 = state.conv.size(-1)
            idx = (keep[:, None] + torch.arange(k1, device=keep.device))[:, None, :].expand(-1, window.size(1), -1)
            state.conv.copy_(window.gather(2, idx))
            state.ssm.copy_(steps[rows, keep])
    cache.lengths += keep
    if h.size(1) > 1:  # (no position-wise tail: the last block mixes the sequence)
        h = h[rows, keep - 1][:, None]
    g = last.final_layernorm(h)  # (b, 1, d): the output at each row's last kept position
    saved = [cache.lengths.clone()] + [t for s in cache.layers if isinstance(s, MambaState)
                                       for t in (s.conv.clone(), s.ssm.clone())]
    drafts = []
    for depth in range(k):
        logits = model.lm_head(g)[:, 0].float()
        if bias is not None:
            logits = logits + bias
        token = torch.argmax(logits, dim=-1)  # (b,)
        drafts.append(token)
        if depth == k - 1:
            break
        h = first.eh_proj(torch.cat([first.enorm(embed(token[:, None])), first.hnorm(g)], dim=-1))
        for block, state in zip(blocks, cache.layers):
            if block.kind == "*":
                h = h + kernels._attend_static(block.mixer, block.norm(h), state, cache.lengths)
            else:
                h = block(h, state) if block.kind == "M" else block(h)
        cache.lengths += 1
        g = last.final_layernorm(h)
    cache.lengths.copy_(saved[0])  # undo the K-1 deeper steps: the head's cache holds depth-1 entries only
    mamba = [s for s in cache.layers if isinstance(s, MambaState)]
    for i, s in enumerate(mamba):
        s.conv.copy_(saved[1 + 2 * i])
        s.ssm.copy_(saved[2 + 2 * i])
    return torch.stack(drafts, dim=1)


class _FewRowMatmuls(CustomGraphPass):
    """Inductor post-grad pass: a matmul of a few rows, x (M, K) @ w (K, N) with 2 <= M <= MAX_ROWS (the K+1
    verified tokens of a row), becomes sum_k wᵀ[n, None, k] · x[None, m, k] laid out (N, M), then transposed:
    inductor's loop then reads each weight row once for all M rows, where MKL's sgemm and the decompose pass's
    (M, N) loop read the weights once per row (measured on the CI machine, five such matmuls of hytron-small's
    shapes at 1 thread: 0.92 ms as sgemm, 0.92 ms decomposed, 0.49 ms this way; 0.13 ms for one row)."""

    MAX_ROWS = 16

    def __call__(self, graph: torch.fx.Graph) -> None:
        aten = torch.ops.aten
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target is not aten.mm.default:
                continue
            x, w = node.args
            xv, wv = x.meta.get("val"), w.meta.get("val")
            if xv is None or wv is None or xv.device.type != "cpu" or not isinstance(xv.shape[0], int):
                continue
            if not 2 <= xv.shape[0] <= self.MAX_ROWS:
                continue
            with graph.inserting_before(node):
                wt = graph.call_function(aten.unsqueeze.default, (graph.call_function(
                    aten.permute.default, (w, [1, 0])), 1))  # (N, 1, K)
                xs = graph.call_function(aten.unsqueeze.default, (x, 0))  # (1, M, K)
                prod = graph.call_function(aten.mul.Tensor, (wt, xs))
                out = graph.call_function(aten.permute.default, (graph.call_function(
                    aten.sum.dim_IntList, (prod, [-1])), [1, 0]))
            node.replace_all_uses_with(out)
            graph.erase_node(node)
            for inp in (x, w):  # computed once, not inlined into the product loop (as the decompose pass does)
                inp.meta["inductor_realize_to_strides"] = True
        graph.lint()

    def uuid(self):
        return get_hash_for_files((__file__,))


@torch.no_grad()
def greedy_step(model, cache: HybridCache, mtp_cache: HybridCache, hidden: Tensor, tokens: Tensor, keep: Tensor,
                pending: Tensor, k: int, bias: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, list]:
    """`draft_step` then `verify_step` of [pending (b, 1), the K drafts] in one call (one compiled graph, no host
    round trip between them): -> drafts (b, K) and what `verify_step` returns."""
    drafts = draft_step(model, mtp_cache, hidden, tokens, keep, k, bias)
    return (drafts, *verify_step(model, cache, torch.cat([pending, drafts], dim=1)))


@functools.cache
def compiled(name: str):
    """`verify_step` or `draft_step` through torch.compile with the plain decode step's options
    (`kernels.CPU_COMPILE_OPTIONS`: inductor's own matrix-vector loops for one-row matmuls, the LM head included),
    and `_FewRowMatmuls` for the matmuls over the K+1 verified (or caught-up) positions."""
    from torch._inductor.fx_passes import decompose_mem_bound_mm

    decompose_mem_bound_mm.cpu_max_other_dimension_decomposition = kernels.CPU_DECOMPOSE_MAX
    fn = {"verify": verify_step, "draft": draft_step, "greedy": greedy_step}[name]
    return torch.compile(fn, options={**kernels.CPU_COMPILE_OPTIONS, "post_grad_custom_pre_pass": _FewRowMatmuls()})


def mark_dynamic(cache: HybridCache) -> None:
    """The KV capacity is a dynamic dimension of the compiled steps: one compilation serves every cache size."""
    for s in cache.layers:
        if isinstance(s, KVState):
            torch._dynamo.mark_dynamic(s.k, 2)
            torch._dynamo.mark_dynamic(s.v, 2)
