"""Speculative decoding with the model's own MTP head: draft K tokens, verify them in one forward, undo the rest.

A step for n running rows (the engine's `_decode_speculative`; DeepSeek-V3 §2.2 heads used as in vLLM's
`nemotron_h_mtp` and TensorRT-LLM's MTP drafting):
  1. **draft** (`MTPDrafter.draft`): the MTP block first catches up on the row's positions it has not seen yet
     (those the last verification kept: hidden state h_t of the main model with the embedding of token t+1,
     as in training's depth 1), which drafts token 1; then K-1 more single-position steps, each from the
     previous step's output and the embedding of the previous draft (the block reused at every depth,
     Megatron's `mtp_use_repeated_layer`). The block has its own cache (`HybridLM.new_mtp_cache`): positions
     added by steps 2..K are undone (`HybridCache.snapshot`/`restore`) so it holds depth-1 entries only.
  2. **verify**: one forward of the main model over the K+1 tokens [last accepted, draft 1..K] of every row,
     logits at all K+1 positions.
  3. **accept** (engine): each position's token is chosen exactly as plain decoding chooses it (thinking
     budget, grammar mask, penalties, bans, stop checks, one token at a time); greedy keeps the draft while it
     equals that choice, sampling keeps it with probability min(1, p/q) and otherwise draws from max(0, p - q)
     (`hytron.infer.sampling.verify_draft`), so greedy output is token for token plain decoding's and sampled
     output has the model's distribution. Drafts stop at the first rejection or at a finish.
  4. **roll back** the rejected positions. Attention KV is truncated (the lengths go back). Mamba's conv and
     SSM state cannot be truncated: the verify forward runs with `HybridCache.track`, which makes each Mamba
     layer keep the state after every token (`Mamba2.forward_tracked`): the conv states are slices of one
     window (the K-1 cached inputs and the K+1 new ones), and the K+2 SSM states come from one vectorised
     computation without a per-token loop (`hytron.model.ssd.ssd_tracked`: a lower-triangular (K+1)² decay
     matrix times the K+1 outer products Δ·x ⊗ B, per head, plus the decayed initial state). `HybridCache.rollback`
     picks the state after the last kept token of each row: no re-run. The cost is memory, per Mamba layer and
     row, K+2 SSM states (H·P·N fp32 each) and a K-1+K+1 column conv window held during the step, and about
     (K+3)/2 decode steps' worth of scan arithmetic (negligible next to the matmuls, which run once over the
     K+1 positions).

The drafts use the request's own generator, so a seeded request is reproducible with the same K, but its
sampled tokens are not the ones plain decoding draws (their distribution is).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hytron.infer.sampling import SamplingParams, draft_token


class MTPDrafter:
    """Drafts with a `HybridLM`'s MTP head (one stored module, reused at every depth, as vLLM requires)."""

    def __init__(self, model, num_tokens: int):
        if model.mtp is None:
            raise ValueError(f"speculative_tokens={num_tokens} needs a model with an MTP head, and this one has "
                             "none (num_nextn_predict_layers=0)")
        if model.mtp.num_modules != 1:
            raise ValueError(f"speculative decoding drafts with one MTP module reused at every depth (as vLLM); "
                             f"this model stores {model.mtp.num_modules}")
        if not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"speculative_tokens must be an integer >= 1, got {num_tokens!r}")
        self.model, self.k = model, num_tokens

    def new_cache(self, batch_size: int, capacity: int):
        return self.model.new_mtp_cache(batch_size, capacity=capacity)

    def _step(self, cache, hidden: Tensor, tokens: Tensor) -> Tensor:
        """hidden (b, L, d) at t, tokens (b, L) at t+1 -> the block's output (b, L, d), continuing `cache`."""
        return self.model.mtp.step(1, hidden, self.model.backbone.embeddings(tokens), cache)

    def prefill(self, cache, hidden: Tensor, next_tokens: list[int]) -> None:
        """Feed prompt positions whose next token is known: hidden (L, d), next_tokens (L) of batch-1 `cache`."""
        if next_tokens:
            self._step(cache, hidden[None, :len(next_tokens)], torch.tensor([next_tokens], device=hidden.device))

    def draft(self, cache, pending: list[Tensor], tails: list[list[int]], params: list[SamplingParams],
              generators: list[torch.Generator], banned: list[tuple[int, ...]]) -> tuple[list[list[int]], list]:
        """K draft tokens per row. Row r's block has not seen the positions of pending[r] (m_r, d): main-model
        hidden states whose next tokens are tails[r] (the row's last m_r tokens). Returns the drafts (n, K) and
        the distributions they were drawn from (None where greedy), for `verify_draft`."""
        n, dev = len(pending), pending[0].device
        m = [p.size(0) for p in pending]
        width = max(m)  # rows caught up together, padded at the end; the padding is rolled back
        hidden = torch.zeros(n, width, pending[0].size(-1), dtype=pending[0].dtype, device=dev)
        tokens = torch.zeros(n, width, dtype=torch.long, device=dev)
        for r in range(n):
            hidden[r, :m[r]] = pending[r]
            tokens[r, :m[r]] = torch.tensor(tails[r], device=dev)
        keep = torch.tensor(m, device=dev)
        cache.track(True)
        out = self._step(cache, hidden, tokens)  # (n, width, d)
        cache.rollback(keep)
        g = out[torch.arange(n, device=dev), keep - 1][:, None]  # (n, 1, d): the block's output at the last token
        snap = cache.snapshot() if self.k > 1 else None
        drafts: list[list[int]] = [[] for _ in range(n)]
        qs: list[list] = [[] for _ in range(n)]
        for depth in range(1, self.k + 1):
            logits = self.model.lm_head(g)[:, 0].float().cpu()  # (n, V)
            for r in range(n):
                token, q = draft_token(logits[r], params[r], generators[r], banned[r])
                drafts[r].append(token)
                qs[r].append(q)
            if depth < self.k:
                g = self._step(cache, g, torch.tensor([[d[-1]] for d in drafts], device=dev))
        if snap is not None:
            cache.restore(snap)
        return drafts, qs


class StaticSpeculation:
    """The static-shape speculation steps (`hytron.model.spec_step`) over one batched cache and its MTP cache, as
    the engine runs them under decode_mode "static" or "compile": greedy drafting and verification in one step
    (`greedy`), or verification alone (`verify`; rows that sample draft with `MTPDrafter.draft`, on the same
    caches). With `compile` (the engine's "compile" at batch 1) they go through torch.compile (once per model
    shape, K and process; guards evaluated on a runner's first call only, as `StaticDecoder` does); if compiling
    fails, it warns once and runs them uncompiled. The caches need room for K+1 more tokens per row than they hold
    (the engine reserves it)."""

    compile_failed: str | None = None  # per process: a backend that cannot compile the steps is not retried

    def __init__(self, model, cache, mtp_cache, k: int, compile: bool = False):
        from hytron.model import spec_step

        self.model, self.cache, self.mtp_cache, self.k = model, cache, mtp_cache, k
        self._spec = spec_step
        self.compile = compile and StaticSpeculation.compile_failed is None
        self.compile_seconds = 0.0
        self._checked: set[str] = set()  # the steps called once on this runner (guards checked)
        if self.compile:
            spec_step.mark_dynamic(cache)
            spec_step.mark_dynamic(mtp_cache)

    def _run(self, name: str, *args):
        fn = getattr(self._spec, f"{name}_step")
        if not self.compile:
            return fn(self.model, *args)
        if name in self._checked:
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                return self._spec.compiled(name)(self.model, *args)
        import time
        import warnings

        from hytron.model.kernels import _compiled_graphs, _restore, _snapshot

        saved = [_snapshot(self.cache), _snapshot(self.mtp_cache)]
        graphs = _compiled_graphs()
        t0 = time.perf_counter()
        try:
            # static shapes but the KV capacity (marked dynamic): a second K or batch size in one process compiles
            # its own static graph, not a dynamic one (where the few-row matmul pass does not apply)
            with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
                out = self._spec.compiled(name)(self.model, *args)
        except Exception as e:  # noqa: BLE001 - a backend that cannot compile these steps: stay correct
            StaticSpeculation.compile_failed = f"{type(e).__name__}: {e}"
            warnings.warn(f"hytron: compiling the speculation steps failed, running them uncompiled "
                          f"({StaticSpeculation.compile_failed})", stacklevel=3)
            _restore(self.cache, saved[0])
            _restore(self.mtp_cache, saved[1])
            self.compile = False
            return fn(self.model, *args)
        if _compiled_graphs() > graphs:  # compiled now, not found compiled
            self.compile_seconds += time.perf_counter() - t0
        self._checked.add(name)
        return out

    def verify(self, feed: Tensor) -> tuple[Tensor, Tensor]:
        """feed (n, K+1) -> hidden (n, K+1, d), logits (n, K+1, V); the cache is left ready for `rollback`."""
        hidden, logits, tracked = self._run("verify", self.cache, feed)
        self._track(tracked, feed.size(1))
        return hidden, logits

    def _track(self, tracked: list, fed: int) -> None:
        for s, t in zip(self.cache.layers, tracked):
            if t is not None:
                s.track, (s.conv_steps, s.ssm_steps) = True, t
        self.cache.last_fed = fed

    def greedy(self, hidden: Tensor, tokens: Tensor, keep: Tensor, pending: Tensor, bias: Tensor | None
               ) -> tuple[Tensor, Tensor, Tensor]:
        """`draft` then `verify` of [pending (n, 1), the drafts] in one step: -> drafts (n, K), hidden, logits."""
        drafts, hidden, logits, tracked = self._run("greedy", self.cache, self.mtp_cache, hidden, tokens, keep,
                                                    pending, self.k, bias)
        self._track(tracked, pending.size(1) + self.k)
        return drafts, hidden, logits
