"""Optional fast paths for the model: fused SSD scan and conv kernels, torch.compile, a static decode step.

Nothing here is imported on the CPU path unless asked for: the kernels are looked up lazily, only for CUDA
tensors, and only once. Each fast path has a test that it agrees with the plain-PyTorch reference
(`hytron.model.ssd`, the model's own cached forward); the reference stays the definition.

The SSD scan backend is chosen by `set_scan_backend` (or the HYTRON_SCAN_BACKEND environment variable):
  auto       mamba-ssm's fused Triton scan on CUDA when the package is installed, else the reference;
  reference  always `ssd_chunked` (plain PyTorch, eager);
  compile    `torch.compile` of `ssd_chunked` (CUDA or CPU; no extra package; compiles once per shape);
  mamba_ssm  like auto, but an error when the package is missing.
The one-token decode step uses hytron's own Triton kernel (`hytron.model.ssd_triton`) on CUDA when the
`triton` package is present and the backend is not `reference`; else `ssd_step`.
"""

from __future__ import annotations

import functools
import os
import time
import weakref

import torch
from torch import Tensor

from hytron.model.cache import HybridCache, KVState, MambaState
from hytron.model.ssd import ssd_chunked

SCAN_BACKENDS = ("auto", "reference", "compile", "mamba_ssm")
_scan_backend = "auto"


def set_scan_backend(name: str) -> str:
    """Choose how `Mamba2` runs the chunked scan (see the module docstring); returns the previous choice."""
    global _scan_backend
    if name not in SCAN_BACKENDS:
        raise ValueError(f"unknown SSD scan backend {name!r}; choose one of {', '.join(SCAN_BACKENDS)}")
    if name == "mamba_ssm" and _mamba_ssm_scan() is None:
        raise RuntimeError("SSD scan backend 'mamba_ssm' needs the mamba-ssm package (with CUDA and Triton)")
    previous, _scan_backend = _scan_backend, name
    return previous


def scan_backend() -> str:
    return _scan_backend


@functools.cache
def _mamba_ssm_scan():
    """mamba_ssm's fused chunked scan (Triton, CUDA only), or None when the package is absent."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # noqa: BLE001 - not installed, or installed without a working Triton/CUDA
        return None
    return mamba_chunk_scan_combined


@functools.cache
def _causal_conv1d():
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:  # noqa: BLE001
        return None
    return causal_conv1d_fn


@functools.cache
def _compiled_scan():
    """`ssd_chunked` through torch.compile: one fused graph for forward and backward, static shapes."""
    return torch.compile(ssd_chunked, dynamic=False, fullgraph=True)


@functools.cache
def _triton_step():
    """hytron's Triton decode-step kernel, or None without the `triton` package."""
    try:
        from hytron.model.ssd_triton import ssd_step_
    except Exception:  # noqa: BLE001 - not installed, or a Triton that does not work here
        return None
    return ssd_step_


_triton_step_failed: str | None = None


def fast_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor | None:
    """`ssd_step` updating `state` in place, y (b, H, P) returned, or None when it does not apply.

    Applies to CUDA tensors (or any, under TRITON_INTERPRET=1) with a contiguous fp32 state. If the kernel
    fails once (e.g. a Triton that cannot compile it), it is switched off for the process with a warning.
    """
    global _triton_step_failed
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if (_scan_backend == "reference" or _triton_step_failed or not (state.is_cuda or interpret)
            or state.dtype != torch.float32 or not state.is_contiguous() or torch.compiler.is_compiling()):
        return None
    step = _triton_step()
    if step is None:
        return None
    try:
        return step(state, x, dt, A, B, C)
    except Exception as e:  # noqa: BLE001 - fall back to the reference, loudly, once
        import warnings

        _triton_step_failed = f"{type(e).__name__}: {e}"
        warnings.warn(f"hytron: Triton decode step disabled, using the reference ({_triton_step_failed})",
                      stacklevel=2)
        return None


def kernels_available() -> dict[str, bool]:
    """Which optional CUDA kernels can be used on this machine."""
    if not torch.cuda.is_available():
        return {"mamba_ssm": False, "causal_conv1d": False, "triton_step": False}
    return {"mamba_ssm": _mamba_ssm_scan() is not None, "causal_conv1d": _causal_conv1d() is not None,
            "triton_step": _triton_step() is not None}


def fast_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
              initial_state: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """A faster scan with `ssd_chunked`'s contract, or None when none applies (the caller runs the reference)."""
    if _scan_backend == "reference" or torch.compiler.is_compiling():  # inside torch.compile the reference
        return None  # is traced and compiled with the rest of the block
    if _scan_backend == "compile":
        return _compiled_scan()(x, dt, A, B, C, chunk_size, initial_state)
    if not x.is_cuda:
        return None
    scan = _mamba_ssm_scan()
    if scan is None:
        return None
    # mamba_ssm takes dt already softplus'ed when dt_softplus=False and no dt_bias; D is added by the caller
    y, final = scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=initial_state,
                    dt_softplus=False, return_final_states=True)
    return y, final


def fast_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
    """Depthwise causal conv + SiLU over (b, channels, L) from causal-conv1d, or None when it does not apply."""
    if not x.is_cuda or torch.compiler.is_compiling():
        return None
    fn = _causal_conv1d()
    if fn is None:
        return None
    return fn(x, weight[:, 0], bias, activation="silu")


def compile_blocks(model: torch.nn.Module, **compile_kwargs) -> torch.nn.Module:
    """Regional compilation: `torch.compile` each block in place (small graphs, compiled once, reused)."""
    for block in model.backbone.layers:
        block.compile(**compile_kwargs)
    return model


# ---- decode with static shapes (CPU eager or compiled, CUDA graphs) -----------------------------------------
def _attend_static(attn, x: Tensor, state: KVState, lengths: Tensor, span: int | None = None) -> Tensor:
    """One decode token per row over the first `span` KV positions (default: the whole buffer), masked past each
    row's length: x (b, 1, d).

    The same arithmetic as `Attention._decode`, but with no host synchronisation and no shape that depends
    on the lengths, so it can be captured in a CUDA graph or compiled once. The caller picks `span` (> every
    row's length) from what it knows on the host, or reads the full capacity.
    """
    b = x.size(0)
    hkv, d = attn.kv_heads, attn.head_dim
    q = attn.q_proj(x).view(b, hkv, attn.heads // hkv, d)  # (b, Hkv, R, Dh)
    # row r's new K/V at position lengths[r], written with index_put_: inductor writes it in place (a scatter_
    # into the cache was compiled as a copy of the whole KV buffer, a write into the copy and a copy back: 2 of
    # the 5 ms of a compiled batch-16 step of hytron-small at capacity 256)
    at = (torch.arange(b, device=x.device)[:, None], torch.arange(hkv, device=x.device)[None, :], lengths[:, None])
    state.k.index_put_(at, attn.k_proj(x).view(b, hkv, d).to(state.k.dtype))
    state.v.index_put_(at, attn.v_proj(x).view(b, hkv, d).to(state.v.dtype))
    k, v = state.k[:, :, :span].to(q.dtype), state.v[:, :, :span].to(q.dtype)  # (b, Hkv, span, Dh)
    scores = torch.matmul(q, k.transpose(-1, -2)) * d**-0.5  # (b, Hkv, R, span)
    hide = torch.arange(k.size(2), device=x.device)[None, :] > lengths[:, None]  # (b, span)
    probs = torch.softmax(scores.masked_fill(hide[:, None, None, :], float("-inf")).float(), dim=-1)
    out = torch.matmul(probs.to(v.dtype), v)  # (b, Hkv, R, Dh)
    return attn.o_proj(out.reshape(b, 1, attn.heads * d))


@torch.no_grad()
def decode_step(model, cache: HybridCache, tokens: Tensor, span: int | None = None) -> Tensor:
    """One decode step of every row, tokens (b, 1) -> logits (b, vocab), with static shapes.

    Equal to `model(tokens, cache)[:, -1]` as long as every row has room (lengths < cache.capacity: the
    caller reserves it). Every state tensor of the cache is updated in place (Mamba's decode does so too),
    nothing is allocated on the host and nothing depends on the lengths but the attention `span` (see
    `_attend_static`), so a CUDA graph captured around this call replays correctly and torch.compile
    compiles it once.
    """
    h = model.backbone.embeddings(tokens)
    for block, state in zip(model.backbone.layers, cache.layers):
        if block.kind == "*":
            h = h + _attend_static(block.mixer, block.norm(h), state, cache.lengths, span)
        else:
            h = block(h, state)
    cache.lengths += 1
    return model.lm_head(model.backbone.norm_f(h))[:, -1]


DECODE_MODES = ("eager", "compile", "graph")


def _decode_window(model, cache: HybridCache, tokens: Tensor, window: Tensor) -> Tensor:
    """`decode_step` over the first `window.size(0)` KV positions: the span travels as the size of an empty
    tensor, which torch.compile treats as a dynamic dimension (a Python int would be specialised, one
    compilation per value, or guarded on every call)."""
    return decode_step(model, cache, tokens, window.size(0))


# inductor's own matrix-vector products for the one-row matmuls (its `decompose_mm_pass`: x·Wᵀ as a fused
# multiply-and-sum loop): at batch 1 every matmul is bound by reading the weights, and MKL's sgemv read them
# more slowly than this loop on the AMD EPYC CI machine (4.3 -> 3.4 ms a step for hytron-small under load, then
# 1.06 ms a token with the LM head too: issue 27, BENCHMARKS.md "Batch-1 decode: static step vs llama.cpp").
# The pass only takes matrices up to `CPU_DECOMPOSE_MAX` on a side; its own CPU limit (2048) would leave the LM
# head (vocab x hidden) to sgemv.
CPU_DECOMPOSE_MAX = 1 << 18


# one thread: only products with a weight of at least this many rows run weight-major (see `_weight_major_pass`)
WEIGHT_MAJOR_MIN_ROWS_1T = 2048


def _weight_major_pass(min_rows: int = 0):
    """An inductor graph pass for the batched decode step: every product of the rows with a weight, x·Wᵀ
    (x: b x K, b symbolic; W: N x K with N >= `min_rows`, a graph input), computed as (W·xᵀ)ᵀ. MKL splits a
    product's work over the first operand's rows: b = 2..16 rows leave a second thread little to do, W's N rows
    do not; and at one thread, it streams a large W (a 4k-vocabulary LM head) faster this way round.
    bench/bench_decode_batched.py, hytron-small's step, both ways in one process (issue 27): at 2 threads
    0.78x the time at batch 16 and 0.48x at batch 4 (4k vocabulary), 0.82-0.89x at batch 16 (400); at 1 thread
    0.99x at batch 16 and 0.63x at batch 4 (4k), but 1.08x at batch 16 with a 400-token vocabulary, whose
    products are all 768 rows or fewer: so one thread takes only the large ones. The one-row graph (b = 1, not
    symbolic) keeps `decompose_mm_pass`'s matrix-vector loops."""
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

    aten = torch.ops.aten

    class WeightMajor(CustomGraphPass):
        def __init__(self):
            self.rewritten = 0  # products rewritten so far

        def __call__(self, graph) -> None:
            for node in list(graph.nodes):
                if node.op != "call_function" or node.target is not aten.mm.default:
                    continue
                x, wt = node.args
                if not (getattr(wt, "target", None) is aten.permute.default and list(wt.args[1]) == [1, 0]
                        and wt.args[0].op == "placeholder" and isinstance(x.meta["val"].shape[0], torch.SymInt)
                        and wt.args[0].meta["val"].shape[0] >= min_rows):
                    continue
                w = wt.args[0]
                with graph.inserting_before(node):
                    xt = graph.call_function(aten.permute.default, (x, [1, 0]))
                    prod = graph.call_function(aten.mm.default, (w, xt))
                    out = graph.call_function(aten.permute.default, (prod, [1, 0]))
                xt.meta["val"] = x.meta["val"].permute(1, 0)
                prod.meta["val"] = w.meta["val"] @ xt.meta["val"]
                out.meta["val"] = prod.meta["val"].permute(1, 0)
                node.replace_all_uses_with(out)
                graph.erase_node(node)
                if not wt.users:
                    graph.erase_node(wt)
                self.rewritten += 1

        def uuid(self):  # the FX graph cache's key: this file's code and the threshold
            return get_hash_for_files((__file__,)) + str(min_rows).encode()

    return WeightMajor()


CPU_COMPILE_OPTIONS = {"post_grad_fusion_options": {"decompose_mm_pass": {}}}


def _compiled_decode_step():
    """`decode_step` through torch.compile (inductor): the step's few hundred small ops fused into a few C++
    loops. The weights stay inputs (not frozen), so a model that is trained further is still read correctly;
    the KV capacity, the attention span and the batch size (2 or more) are dynamic dimensions (`StaticDecoder`
    marks them), so one compilation serves every cache size of a model shape. The batched step's products run
    weight-major (`_weight_major_pass`): all of them with more than one thread, the large ones (the LM head of a
    real vocabulary) with one."""
    return _compiled_decode_step_for(0 if torch.get_num_threads() > 1 else WEIGHT_MAJOR_MIN_ROWS_1T)


@functools.cache
def _compiled_decode_step_for(weight_major_min_rows: int):
    from torch._inductor.fx_passes import decompose_mem_bound_mm

    # read by the pass at compile time; set once here (a module-level limit, taken at its import from config)
    decompose_mem_bound_mm.cpu_max_other_dimension_decomposition = CPU_DECOMPOSE_MAX
    weight_major = _weight_major_pass(weight_major_min_rows)
    return torch.compile(_decode_window, options={**CPU_COMPILE_OPTIONS, "post_grad_custom_pre_pass": weight_major})


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def compiles_whole(model, with_mtp: bool = False) -> bool:
    """Whether `decode_step` (`with_mtp`: and the MTP head's steps) compiles to one graph for `model`, whose guards
    the first call checks for good. MoE blocks break it (their routing groups tokens by expert, a data-dependent
    shape), and the graphs after a break see tensors that were not marked dynamic: they keep their guards and
    recompile for new sizes."""
    kinds = [block.kind for block in model.backbone.layers]
    if with_mtp and model.mtp is not None:
        kinds += [block.kind for block in model.mtp.layers]
    return all(kind in "M*-" for kind in kinds)


class StaticDecoder:
    """`decode_step` for one cache whose capacity is fixed, run per token in one of `DECODE_MODES`:

      eager    the static step in plain PyTorch; the attention span follows the longest row (known on the host);
      compile  torch.compile'd once per model shape and process (CPU; see `_compiled_decode_step`), whatever the
               KV capacity, attention span and (2 or more) batch size; the span follows the longest row, as eager;
      graph    captured once as a CUDA graph and replayed (CUDA only): a decode step of a small model launches
               hundreds of small kernels, and replaying them as one graph removes the per-launch CPU cost that
               otherwise bounds batch-1 decode (state-spaces/mamba#355).
    `mode=None` picks graph on CUDA, eager elsewhere. `step` raises when a row would run past the capacity.
    `compile_seconds`: what building this decoder cost (compilation or capture; 0 when reused or eager).
    """

    def __init__(self, model, cache: HybridCache, mode: str | None = None, warmup: int = 2):
        device = cache.lengths.device
        mode = mode or ("graph" if device.type == "cuda" else "eager")
        if mode not in DECODE_MODES:
            raise ValueError(f"unknown decode mode {mode!r}; choose one of {', '.join(DECODE_MODES)}")
        if mode == "graph" and device.type != "cuda":
            raise ValueError("decode mode 'graph' needs the cache on a CUDA device")
        self.model, self.cache, self.mode = model, cache, mode
        self.tokens = torch.zeros(cache.batch_size, 1, dtype=torch.long, device=device)
        # compile: the attention span as the size of a slice of this (see `_decode_window`)
        self.windows = torch.empty(max(cache.capacity or 0, 2), device=device) if mode == "compile" else None
        self.longest = int(cache.lengths.max())  # host copy: the span of the next eager step, without a sync
        # compile: the last position stays free, as the compiled step assumes (its attention reads a span shorter
        # than the KV buffer; a span of the whole buffer would need another compilation, mid-request)
        self.room = cache.capacity - self.longest - (mode == "compile") if cache.capacity else None
        self.graph = None
        self.compile_seconds = 0.0
        self.check_guards = False  # compile: whether the next step must check every guard of the compiled step
        self.whole = compiles_whole(model)
        if mode == "eager":
            return
        t0 = time.perf_counter()
        if mode == "compile":
            _mark_dynamic(cache, self.tokens)
            variant = (_compiled_decode_step(), cache.batch_size > 1)
            warm = _WARM.setdefault(model, set())
            if variant in warm:  # compiled for this model already: the first step checks the guards (no warm-up)
                self.check_guards = True
                return
            warm.add(variant)
        saved = _snapshot(cache)
        compiled = False
        if mode == "compile":
            graphs = _compiled_graphs()
            # compiles, once per model shape (undone below); a span of 2 or more (a size 1 would be specialised)
            window = self._window(max(self.longest + 1, 2))
            torch._dynamo.mark_dynamic(window, 0)
            with torch.no_grad():  # as `step` runs it: grad mode is one of the guards
                _compiled_decode_step()(model, cache, self.tokens, window)
            compiled = _compiled_graphs() > graphs
        else:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm-up outside the graph (allocator, cuBLAS handles, lazy init)
                for _ in range(warmup):
                    decode_step(model, cache, self.tokens)
            torch.cuda.current_stream(device).wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = decode_step(model, cache, self.tokens)
        _restore(cache, saved)  # the warm-up / compiling call advanced the cache; capture itself ran nothing
        if mode == "graph" or compiled:
            self.compile_seconds = time.perf_counter() - t0

    def _window(self, span: int) -> Tensor:
        return self.windows[:min(span, self.windows.size(0))]

    @torch.no_grad()
    def step(self, tokens: Tensor) -> Tensor:
        """tokens (b, 1) -> logits (b, vocab); with a graph, the returned tensor is overwritten by the next step."""
        if self.room is not None:
            if self.room < 1:
                raise RuntimeError(f"StaticDecoder: the cache is full (capacity {self.cache.capacity}"
                                   f"{', the last position kept free when compiled' if self.mode == 'compile' else ''}"
                                   "); make a cache with more capacity first")
            self.room -= 1
        self.longest += 1
        if self.mode == "eager":
            return decode_step(self.model, self.cache, tokens, self.longest)
        if self.mode == "compile":
            # the first call (in __init__) checked every guard of this model and cache; later calls differ only
            # in the tensors' values and dynamic sizes, so guard evaluation (about 0.3-1 ms a step, as long as the
            # step's fused arithmetic) is skipped but for the guards that tell compiled variants apart
            window = self._window(max(self.longest, 2))
            if self.check_guards:  # as the warm-up does: a recompilation here must keep the span dynamic
                torch._dynamo.mark_dynamic(window, 0)
            if not self.whole or self.check_guards:  # graph breaks: later graphs may still recompile (guards on)
                self.check_guards = False
                return _compiled_decode_step()(self.model, self.cache, tokens, window)
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                return _compiled_decode_step()(self.model, self.cache, tokens, window)
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits


# model -> the (compiled step, batched) variants a StaticDecoder has already run (guards checked) for it: a new
# decoder for another cache of the same model (rows joined or left) skips the warm-up step (a snapshot of the
# state, one step and a restore: 3-4 ms at 16 rows, paid at every join) and checks the guards on its first step
_WARM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _mark_dynamic(cache: HybridCache, tokens: Tensor) -> None:
    """Tell torch.compile which sizes vary between calls, so one compilation serves them all: the KV capacity,
    and the batch size when there are several rows (one row stays its own specialised graph: its one-row matmuls
    are compiled as the fused matrix-vector loops of `CPU_COMPILE_OPTIONS`; every batch of 2 or more rows shares
    a second graph with a symbolic batch size and MKL's matrix products)."""
    batched = tokens.size(0) > 1
    if batched:
        torch._dynamo.mark_dynamic(tokens, 0)
        torch._dynamo.mark_dynamic(cache.lengths, 0)
    for s in cache.layers:
        if isinstance(s, KVState):
            for t in (s.k, s.v):
                torch._dynamo.mark_dynamic(t, 2)
                if batched:
                    torch._dynamo.mark_dynamic(t, 0)
        elif isinstance(s, MambaState) and batched:
            torch._dynamo.mark_dynamic(s.conv, 0)
            torch._dynamo.mark_dynamic(s.ssm, 0)


def _snapshot(cache: HybridCache) -> list[Tensor]:
    return [t.clone() for t in _state_tensors(cache)]


def _restore(cache: HybridCache, saved: list[Tensor]) -> None:
    for t, s in zip(_state_tensors(cache), saved):
        t.copy_(s)


def _state_tensors(cache: HybridCache) -> list[Tensor]:
    """The state a decode step overwrites: lengths and Mamba states. KV entries need no saving: a step
    writes at positions >= the lengths, which stay masked until a later step writes them again."""
    out = [cache.lengths]
    for s in cache.layers:
        if isinstance(s, MambaState):
            out += [s.conv, s.ssm]
    return out


def scan_backend_from_env() -> None:
    """Apply HYTRON_SCAN_BACKEND if set (read once at import)."""
    name = os.environ.get("HYTRON_SCAN_BACKEND")
    if name:
        set_scan_backend(name)


scan_backend_from_env()
