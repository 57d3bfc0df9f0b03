"""Continuous batching over a HybridLM: prefill admitted prompts in batched forwards, decode all running requests
together.

Each running request owns one row (slot) of one batched `HybridCache`: Mamba conv + SSM state (constant
size) and attention KV (grows with its length). A step of the engine
  1. drops cancelled requests (waiting or running) and admits waiting ones while slots are free;
  2. prefills admitted prompts: at most `prefill_chunk` prompt tokens per step while other requests decode (their
     next token waits for the step), up to IDLE_PREFILL_FACTOR times that when none does; prompts admitted
     together go in batched forwards, rows of different lengths right-padded (exact: `HybridLM.forward`'s
     `fed`), grouped by a cost model (`_prefill_group`), so a burst of requests prefills as large matrix
     products; a prompt finished prefilling samples its first token and joins the batch;
  3. decodes every running request by one token with a single static-shape step over the batched cache
     (`decode_mode`, see DECODE_MODES; the model's own `model(next_tokens (n, 1), cache)` with "eager"),
     samples each row with its own parameters, penalties (over its own token history) and generator,
     applies its thinking budget, releases text and checks stop ids, stop strings and max_tokens; finished
     rows leave the batch.
The batched cache is rebuilt (rows copied with `HybridCache.fill`) only when its membership changes, so
a step never computes rows of idle slots. With `speculative_tokens` K, step 3 drafts K tokens per row with the
model's MTP head and verifies them in one forward, releasing up to K+1 tokens per row and step, with the same
greedy tokens and the same sampling distribution (`hytron.infer.speculative` says how, and what rolling back the
Mamba state costs). With `prefix_cache_bytes`, prompts start from the longest cached prefix of an earlier prompt
or finished sequence (attention KV + Mamba state snapshots, `hytron.infer.prefix_cache`) and prefill only the rest;
prefill forwards then end at its block boundaries, where blocks are stored, as are prompt ends and, when a request
finishes, the state of its whole sequence (the next turn of a chat continues it). Drive it with `step()` from one
thread, or `start()` a daemon thread that steps whenever there is work. It works on token ids; text (for stop
strings and streaming) goes through the `decode` function the caller passes (to the engine, or per request to
`submit`).
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch

from hytron.infer.budget import ThinkingBudget, newline_ids
from hytron.infer.prefix_cache import BLOCK_SIZE, PrefixCache
from hytron.infer.request import Completion, Delta, EngineClosed, PromptTooLong, QueueFull, Request
from hytron.infer.sampling import (
    SamplingParams,
    TokenHistory,
    make_generator,
    sample,
    sequence_logprobs,
    token_logprob,
    verify_draft,
)
from hytron.infer.speculative import MTPDrafter, StaticSpeculation
from hytron.infer.text import TextStream
from hytron.model.cache import HybridCache
from hytron.model.kernels import StaticDecoder, compiles_whole

# How the engine runs a decode step (`decode_mode`): "eager" is the model's own cached forward (any batch, the
# cache grows as rows do); "static" is `StaticDecoder`'s static-shape step in plain PyTorch over a cache sized
# once for every row's prompt + max_tokens (no per-token shape logic or reallocation); "compile" also runs that
# step torch.compile'd (a CUDA graph on GPU): one graph for one row and one for any batch of several rows (a
# symbolic batch size), each compiled once per process and model shape (reported in
# `stats["decode_compile_ms"]`; `warmup` compiles both up front). With speculation, "static" and "compile" run
# the static verify and (greedy) draft steps (`StaticSpeculation`), compiled at batch 1 under "compile"; "eager"
# runs the model's own cached forward for both.
DECODE_MODES = ("eager", "static", "compile")
# the cost of a prefill forward in positions (one position computed = 1), for choosing which prompts prefill
# together (`Engine._prefill_group`): a forward's fixed cost (about 5 ms of eager ops for hytron-small on CPU,
# 40-60 positions' worth) and each row's (its state gathered into the batch)
PREFILL_FORWARD_COST, PREFILL_ROW_COST = 64, 4
# a step's prefill forwards after its first feed at least this many tokens (a smaller remainder of the step's
# budget waits for the next step's forward, which costs less than a forward of its own)
PREFILL_MIN_FEED = 32
# with no request decoding, a step may prefill this many times `prefill_chunk` tokens (a burst of prompts in
# fewer, larger forwards; nobody's next token waits for it)
IDLE_PREFILL_FACTOR = 4
# an idle engine's thread, woken by a request, starts once no other has come for this long (see burst_wait)
BURST_GAP = 0.001


class _Seq:
    """Engine-side state of one request."""

    def __init__(self, req: Request, engine: Engine):
        p = req.params
        self.req, self.params = req, p
        self.generator = make_generator(p.seed)
        self.budget = None
        if p.thinking is not None and engine.think_end_id is not None:
            self.budget = ThinkingBudget(engine.think_end_id, engine.newline_ids, p.max_thinking_tokens,
                                         grace=p.grace(), thinking=p.thinking, line_end_id=engine.line_end_id)
        decode = req.decode or engine.decode or (lambda ids: "")
        self.reasoning = TextStream(decode)
        self.answer = TextStream(decode, p.stop, p.include_stop_str_in_output)
        self.stop_ids = frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos else engine.stop_ids)
        self.out: list[int] = []
        self.history = TokenHistory(req.prompt_ids, engine.vocab_size, p) if p.penalized else None
        self.constraint = req.constraint  # masks the answer's tokens (never the thinking), e.g. a JSON grammar
        self.logprobs = []
        self.prompt_logprobs = []
        self.reasoning_tokens = 0
        self.last: Delta | None = None  # the delta of the finishing token, completed by Engine._finish
        # while prefilling: the cache holding this sequence's state, at row `row` (its own batch-1 cache, or the
        # batch of its last batched prefill forward, shared with that forward's other rows); None until a
        # forward or a cached prefix gives it state
        self.cache, self.row = None, 0
        self.started = False  # the prefix cache was consulted
        self.prefilled = 0
        # with the prefix cache, whose entry one token before the prompt's end cuts the prefill there, the
        # prompt's last token is left to the first decode step, which feeds it and samples the first token with
        # every other row (instead of a prefill forward of one token per prompt); not for prompt log-probs (they
        # need the prefill's logits), speculation (the MTP head is fed from the prefill), max_tokens 0 (no
        # decode step), a one-token prompt, or a prompt that ends a block (the block is stored when prefilled)
        n, pc = len(req.prompt_ids), engine.prefix_cache
        self.defer_last = (pc is not None and n >= 2 and n % pc.block_size != 0 and engine._drafter is None
                           and p.prompt_logprobs is None and p.max_tokens > 0)
        self.cached_tokens = 0  # prompt tokens restored from the prefix cache
        self.block_hidden: list[torch.Tensor] = []  # with speculation: hidden states since the last cached block
        self.pending: int | None = None  # last sampled token, to be fed at the next decode step
        self.first_token_time: float | None = None
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        # speculative decoding: the MTP head's batch-1 cache while prefilling, the main model's hidden states
        # (m, d) at the last m tokens that the head has not seen yet, and the counts reported in the Completion
        self.mtp_cache = None
        self.mtp_hidden: torch.Tensor | None = None
        self.drafts = self.draft_tokens = self.accepted_tokens = 0


class Engine:
    """Slot-based continuous batching for a `HybridLM` (see the module docstring)."""

    def __init__(self, model, *, max_slots: int = 8, max_waiting: int = 64, max_len: int | None = None,
                 prefill_chunk: int = 512, stop_ids: Iterable[int] = (), decode: Callable[[Sequence[int]], str]
                 | None = None, think_start_id: int | None = None, think_end_id: int | None = None,
                 newline_ids: Iterable[int] = (), line_end_id: int | None = None, speculative_tokens: int = 0,
                 prefix_cache_bytes: int = 0, prefix_block_size: int = BLOCK_SIZE, decode_mode: str = "static",
                 burst_wait: float = 0.0, burst_gap: float = BURST_GAP):
        if max_slots < 1 or max_waiting < 0 or prefill_chunk < 1:
            raise ValueError("max_slots and prefill_chunk must be >= 1 and max_waiting >= 0")
        if not (0 <= burst_wait <= 1 and 0 < burst_gap <= 1):
            raise ValueError(f"burst_wait must be in [0, 1] s and burst_gap in (0, 1] s, got {burst_wait}, {burst_gap}")
        # the engine's thread, woken from idle by a request, waits while more keep arriving (each within
        # `burst_gap` s of the last, up to `burst_wait` s in all), so a burst prefills together (_await_burst)
        self.burst_wait, self.burst_gap = burst_wait, burst_gap
        self._last_submit = 0.0
        if decode_mode not in DECODE_MODES:
            raise ValueError(f"decode_mode must be one of {', '.join(DECODE_MODES)}, got {decode_mode!r}")
        self.decode_mode = decode_mode
        # speculative_tokens K > 0: draft K tokens per step with the model's MTP head (hytron.infer.speculative)
        self.speculative_tokens = speculative_tokens
        self._drafter = MTPDrafter(model, speculative_tokens) if speculative_tokens else None
        self.model = model.eval()
        # prefix caching within `prefix_cache_bytes` (0: off); with speculation its blocks also keep the model's
        # hidden states, from which the MTP head's cache is rebuilt (one pass of the head, not of the model)
        self.prefix_cache = (PrefixCache(prefix_cache_bytes, prefix_block_size, with_hidden=bool(speculative_tokens))
                             if prefix_cache_bytes else None)
        self._device = next(model.parameters()).device  # inputs go where the weights are (CPU or GPU)
        self.vocab_size = model.config.vocab_size
        self.max_slots, self.max_waiting, self.prefill_chunk = max_slots, max_waiting, prefill_chunk
        self.max_len = max_len or model.config.max_position_embeddings
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        self.decode = decode
        self.think_start_id, self.think_end_id = think_start_id, think_end_id
        self.newline_ids = frozenset(newline_ids)
        self.line_end_id = line_end_id  # "\n": forced before </think> when a budget cuts a line
        self._think_ids = tuple(i for i in (think_start_id, think_end_id) if i is not None)
        self._waiting: collections.deque[Request] = collections.deque()
        self._prefilling: list[_Seq] = []
        self._running: list[_Seq] = []  # row i of self._cache belongs to self._running[i]
        # prefilled this step, joining the batch at its end: still counted active (else, in that window, a
        # submit saw a free slot and queued beyond max_waiting)
        self._joining: list[_Seq] = []
        self._cache = None
        self._decoder: StaticDecoder | None = None  # the static decode step over self._cache (decode_mode)
        self._mtp_cache = None  # the MTP head's batched cache, rows as self._cache's
        self._spec: StaticSpeculation | None = None  # the static speculation steps over both (decode_mode not eager)
        self._bans: dict = {}  # banned-id tuples of the rows -> the draft step's additive bias (n, V)
        self._cv = threading.Condition()
        self._next_id = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        # prompt_tokens, generation_tokens, reasoning_tokens, finished_<reason>; with speculation, spec_drafts
        # (row-steps that verified K drafts), spec_draft_tokens and spec_accepted_tokens; decode_compile_ms
        self.stats = collections.Counter()
        # called (in the engine's thread) after every step, e.g. to hand the step's deltas over in one go
        self.step_hooks: list[Callable[[], None]] = []

    # ---- public API --------------------------------------------------------------------------------
    def submit(self, prompt_ids: Sequence[int], params: SamplingParams | None = None,
               on_delta: Callable[[Delta], None] | None = None,
               decode: Callable[[Sequence[int]], str] | None = None, constraint=None) -> Request:
        """Queue a request; returns its handle at once. `decode` turns this request's ids into text (default:
        the engine's; a server passes one per request, e.g. keeping or skipping special tokens). `constraint`
        (an object with `mask(logits (V,)) -> logits` and `accept(token_id)`) restricts every answer token,
        thinking tokens excepted (e.g. `hytron.serve.structured.JSONConstraint`). Raises QueueFull,
        EngineClosed, PromptTooLong, ValueError."""
        params = params or SamplingParams()
        ids = [int(i) for i in prompt_ids]
        if not ids:
            raise ValueError("prompt must hold at least one token")
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids must be in [0, {self.vocab_size}), got {bad[:5]}")
        if params.logit_bias and not all(i < self.vocab_size for i in params.logit_bias):
            bad = sorted(i for i in params.logit_bias if i >= self.vocab_size)[:5]
            raise ValueError(f"logit_bias: token ids must be in [0, {self.vocab_size}), got {bad}")
        if len(ids) + params.max_tokens > self.max_len:
            raise PromptTooLong(len(ids), params.max_tokens, self.max_len)
        if params.stop and (decode or self.decode) is None:
            raise ValueError("stop strings need the engine's decode function")
        if params.thinking is not None and self.think_end_id is None:
            raise ValueError("thinking control needs the engine's think_end_id")
        with self._cv:
            if self._closed:
                raise EngineClosed("the engine is shut down")
            if len(self._waiting) >= self.max_waiting + max(0, self.max_slots - self.num_active):
                raise QueueFull(f"{len(self._waiting)} requests are waiting (limit {self.max_waiting})")
            req = Request(self._next_id, ids, params, on_delta)
            req.decode, req.constraint = decode, constraint
            req._wake = self._wake
            self._next_id += 1
            self._waiting.append(req)
            self._last_submit = time.monotonic()
            self._cv.notify()
        return req

    @property
    def num_active(self) -> int:
        """Requests holding a slot and not yet finished."""
        return sum(not s.req.done for s in self._running) + len(self._prefilling) + len(self._joining)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def healthy(self) -> bool:
        """Accepting requests, and its thread (if started) is alive."""
        return not self._closed and (self._thread is None or self._thread.is_alive())

    def has_work(self) -> bool:
        return bool(self._waiting or self._prefilling or self._running)

    def run_until_idle(self) -> None:
        """Step in this thread until every submitted request has finished."""
        while self.has_work():
            self.step()

    @classmethod
    def for_tokenizer(cls, model, tokenizer, *, decode: Callable[[Sequence[int]], str] | None = None,
                      **kw) -> Engine:
        """The engine for `model` with `tokenizer_settings(tokenizer)`: the one constructor every caller uses."""
        return cls(model, **tokenizer_settings(tokenizer, decode), **kw)

    def start(self) -> Engine:
        """Run the engine in a daemon thread that steps while there is work."""
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hytron-engine", daemon=True)
                self._thread.start()
        return self

    def run(self, started: Callable[[], None] | None = None) -> None:
        """Run the engine's loop in the calling thread, which becomes the engine's thread (`start` then starts
        none), until `close`; `started()` is called once it is. A server that loads and compiles the model in
        this same thread keeps every parallel torch op in one thread: GNU OpenMP gives each thread that runs one
        a team of its own, and once those teams hold more threads than there are cores, it stops spinning
        between parallel regions (each region then waits on a futex): at 2 threads, a compiled batch-16 decode
        step took 2.3 ms in the thread that loaded the model and 5.9 ms in another thread."""
        with self._cv:
            if self._thread is not None:
                raise RuntimeError("the engine already runs in a thread")
            self._thread = threading.current_thread()
        if started is not None:
            started()
        self._loop()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new requests, cancel the others, and stop the thread."""
        with self._cv:
            self._closed = True
            for r in list(self._waiting) + [s.req for s in self._prefilling + self._running]:
                r._cancelled = True
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                return
            self._thread = None
        self.run_until_idle()  # finish what the thread left: every handle gets its 'cancelled' result

    def cache_bytes(self) -> int:
        return self._cache.memory_bytes()["total"] if self._cache is not None else 0

    # ---- the loop ----------------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self.has_work() and not self._closed:
                    self._cv.wait(0.5)
                if self._closed and not self.has_work():
                    return
                self._await_burst()
            try:
                self.step()
            except Exception as e:  # never let the thread die with requests waiting on it
                traceback.print_exc()
                self._fail_all(f"{type(e).__name__}: {e}")
                self._run_step_hooks()

    def _await_burst(self) -> None:
        """When the engine is idle and requests arrive, wait (up to `burst_wait` s) until `burst_gap` s pass with
        no new one or the slots are full: a client that sends many requests at once has them arrive a fraction
        of a millisecond apart (each parsed and validated by the server first), and starting a forward at the
        first would prefill it alone, and the rest in later forwards while it decodes. Called holding _cv."""
        if not self.burst_wait or self._running or self._prefilling:
            return
        deadline = time.monotonic() + self.burst_wait
        while not self._closed and len(self._waiting) < self.max_slots:
            left = min(deadline, self._last_submit + self.burst_gap) - time.monotonic()
            if left <= 0:
                return
            self._cv.wait(left)

    def step(self) -> None:
        """One scheduling step: drop cancelled, admit, prefill (bounded), decode one token for every runner;
        then the `step_hooks`."""
        try:
            self._step()
        finally:
            self._run_step_hooks()

    def _run_step_hooks(self) -> None:
        for hook in self.step_hooks:
            try:
                hook()
            except Exception:  # a caller's hook failed: report it, keep the engine going
                traceback.print_exc()

    @torch.inference_mode()
    def _step(self) -> None:
        with self._cv:
            for r in [r for r in self._waiting if r.cancelled]:
                self._waiting.remove(r)
                self._finish(_Seq(r, self), "cancelled")
            while self._waiting and self.num_active < self.max_slots:
                self._prefilling.append(_Seq(self._waiting.popleft(), self))
        leaving = [s for s in self._running if s.req.cancelled]
        for s in [s for s in self._prefilling if s.req.cancelled]:
            self._prefilling.remove(s)
            self._finish(s, "cancelled")
        for s in leaving:
            s.finish_reason = "cancelled"
        joining = self._joining = []
        try:
            # the budget bounds how long running requests wait for their next token; none waits when none runs
            decoding = any(s.finish_reason is None for s in self._running)
            budget = first = self.prefill_chunk * (1 if decoding else IDLE_PREFILL_FACTOR)
            while budget > 0:  # forwards end at prefix-cache blocks
                todo = [s for s in self._prefilling if s.prefilled < len(s.req.prompt_ids)]
                for s in todo:
                    self._prefill_end(s)  # a new sequence's cache and cached prefix (which may be all it needs)
                todo = [s for s in todo if s.prefilled < len(s.req.prompt_ids)]
                if not todo:
                    break
                group = self._prefill_group([s for s in todo if self._batchable(s)], budget)
                if group is None:
                    group = [todo[0]], budget, min(budget, self._prefill_end(todo[0]) - todo[0].prefilled)
                if budget < first and group[2] < PREFILL_MIN_FEED:
                    break
                if len(group[0]) == 1:  # one row: its own cache, no copies
                    budget -= self._prefill(group[0][0], group[1])
                else:
                    budget -= self._prefill_batch(*group[:2])
            for s in list(self._prefilling):
                if s.prefilled == len(s.req.prompt_ids):
                    self._prefilling.remove(s)
                    if s.finish_reason is None:
                        joining.append(s)
                    else:
                        self._finish(s, s.finish_reason)
            if any(s.finish_reason is None for s in self._running):
                self._decode()
        except Exception as e:  # keep serving: fail the requests in flight, reset the batch
            traceback.print_exc()
            self._fail_all(f"{type(e).__name__}: {e}", joining)
            self._joining = []
            return
        staying = [s for s in self._running if s.finish_reason is None]
        if self.prefix_cache is not None and len(staying) != len(self._running):
            self._store_finished()
        for s in self._running:
            if s.finish_reason is not None:
                self._finish(s, s.finish_reason)
        if len(staying) != len(self._running) or joining:
            kept = [i for i, s in enumerate(self._running) if s.finish_reason is None]
            self._running, self._joining = staying + joining, []
            # a static step never grows the cache: room for every row's whole completion, once
            room = max(len(s.req.prompt_ids) + s.params.max_tokens for s in self._running) if (
                self._running and self.decode_mode != "eager") else 0
            if room and self._drafter is not None:  # a verify step writes K+1 tokens past the last kept one
                room += self.speculative_tokens + 1
            self._cache = self._gather([(self._cache, i) for i in kept] + [(s.cache, s.row) for s in joining],
                                       room=room)
            self._decoder = self._static_decoder() if room and self._drafter is None else None
            if self._drafter is not None:
                self._mtp_cache = self._gather([(self._mtp_cache, i) for i in kept] +
                                               [(s.mtp_cache, 0) for s in joining], self._drafter.new_cache, room)
                self._spec = self._static_speculation() if room else None
            for s in joining:
                s.cache = s.mtp_cache = None

    def _fail_all(self, msg: str, extra: list[_Seq] = ()) -> None:
        """Finish every admitted request (with 'error' unless it already had a reason) and empty the batch."""
        for s in [*self._running, *extra, *self._prefilling]:
            if not s.req.done:
                reason = s.finish_reason or "error"
                self._finish(s, reason, error=msg if reason == "error" else None)
        self._running, self._prefilling, self._cache, self._mtp_cache = [], [], None, None
        self._decoder = self._spec = None

    def _static_decoder(self, cache=None) -> StaticDecoder:
        """The static decode step over the batched cache: compiled under decode_mode "compile", else plain
        PyTorch. On CUDA the one-row step is a CUDA graph instead, and batches of several rows stay plain (a graph
        is captured for one batch size, and the batch changes as requests come and go); so do they for a model
        whose step does not compile whole (MoE: `kernels.compiles_whole`). Compilation happens once per model shape
        and process; if it fails, the engine warns once and keeps the plain static step."""
        cache = cache or self._cache
        if self.decode_mode == "compile" and (cache.batch_size == 1 or (
                self._device.type != "cuda" and compiles_whole(self.model))):
            try:
                dec = StaticDecoder(self.model, cache, "graph" if self._device.type == "cuda" else "compile")
            except Exception as e:  # noqa: BLE001 - a backend that cannot compile this model: stay correct
                warnings.warn(f"hytron: compiling the decode step failed, decoding uncompiled ({type(e).__name__}: "
                              f"{e})", stacklevel=2)
                self.decode_mode = "static"
            else:
                self.stats["decode_compile_ms"] += round(dec.compile_seconds * 1000)
                return dec
        return StaticDecoder(self.model, cache, "eager")

    def warmup(self) -> float:
        """Compile the decode step now (decode_mode "compile"), not at the first request: the one-row step, and
        the several-rows step when `max_slots` > 1 (one graph for every batch size from 2 to max_slots); with
        speculation, the batch-1 verify and draft steps. Returns the seconds it took (0 when there is nothing to
        compile or it was compiled before)."""
        if self.decode_mode != "compile":
            return 0.0
        before = self.stats["decode_compile_ms"]
        with torch.inference_mode():
            if self._drafter is None:
                batched = self.max_slots > 1 and self._device.type != "cuda" and compiles_whole(self.model)
                for rows in (1, 2) if batched else (1,):
                    if self.decode_mode == "compile":  # a failed compile falls back to "static" (and warns once)
                        self._static_decoder(self.model.new_cache(rows, capacity=16))
            else:
                k = self.speculative_tokens
                spec = self._static_speculation(self.model.new_cache(1, capacity=16 + 2 * k),
                                                self._drafter.new_cache(1, capacity=16 + 2 * k))
                spec.greedy(torch.zeros(1, k + 1, self.model.config.hidden_size, device=self._device),
                            torch.zeros(1, k + 1, dtype=torch.long, device=self._device),
                            torch.ones(1, dtype=torch.long, device=self._device),
                            torch.zeros(1, 1, dtype=torch.long, device=self._device), None)
                self.stats["decode_compile_ms"] += round(spec.compile_seconds * 1000)
        return (self.stats["decode_compile_ms"] - before) / 1000

    def _static_speculation(self, cache=None, mtp_cache=None) -> StaticSpeculation:
        """The static speculation steps over the batched caches; compiled for one row under decode_mode "compile"
        (not for MoE models: their steps break into several graphs, see `kernels.compiles_whole`)."""
        cache, mtp_cache = cache or self._cache, mtp_cache or self._mtp_cache
        return StaticSpeculation(self.model, cache, mtp_cache, self.speculative_tokens,
                                 compile=self.decode_mode == "compile" and cache.batch_size == 1
                                 and self._device.type == "cpu" and compiles_whole(self.model, with_mtp=True))

    def _gather(self, rows, new_cache=None, room: int = 0):
        """A new batched cache (from `new_cache`, default the model's) holding the given (cache, row) pairs, in
        order, with room for at least `room` tokens per row; None when empty."""
        if not rows:
            return None
        longest = max([int(c.lengths[src].max()) for c, _, src in HybridCache.by_source(rows)] + [room - 16])
        capacity = 1 << max(4, (longest + 16 - 1).bit_length())  # a power of two: stable as rows come and go
        new = (new_cache or self.model.new_cache)(len(rows), capacity=capacity)
        new.fill(rows)
        return new

    def _batchable(self, s: _Seq) -> bool:
        """Whether `s` may prefill in a batch with others: not when it wants prompt log-probs (every position's
        logits) or the MTP head drafts (it is fed the hidden states, one sequence at a time)."""
        return self._drafter is None and s.params.prompt_logprobs is None

    def _prefill_end(self, s: _Seq) -> int:
        """Where the next prefill forward of `s` must stop: its prompt's end (but its last token with
        `defer_last`), or, with the prefix cache, the next block boundary or the prompt's last token
        (`_stores_at`). The first call restores the longest cached prefix of its prompt."""
        if not s.started:
            s.started = True
            self._restore_prefix(s)
        full = len(s.req.prompt_ids)
        end = full - 1 if s.defer_last else full
        if self.prefix_cache is None:
            return end
        return min(full - 1 if s.prefilled < full - 1 else end, self.prefix_cache.next_boundary(s.prefilled))

    def _stores_at(self, s: _Seq, n: int) -> bool:
        """Whether the prefix cache keeps the state of `s` after n prompt tokens: at block boundaries, and one token
        before the prompt's end, where the same prompt sent again resumes (its last token is always fed, for its
        logits) as does a longer one that continues it (a chat's next turn, a longer document)."""
        return n % self.prefix_cache.block_size == 0 or n == len(s.req.prompt_ids) - 1

    def _prefill_group(self, seqs: list[_Seq], budget: int) -> tuple[list[_Seq], int, int] | None:
        """Of the sequences that may prefill together, the group for the next forward, the most tokens n any
        row of it feeds (each feeds up to n, to its next stop, right-padded to the longest slice) and the tokens
        it feeds in all; None when no row has tokens left.

        The group is the k rows with the most left, for the k and n (n one of the rows' distances, or
        budget // k) whose forward, plus one more forward for what it leaves (the other rows, and what its rows
        have left past n), costs least, within `budget` positions. A forward costs `PREFILL_FORWARD_COST` +
        `PREFILL_ROW_COST` per row + one per position computed, padding included: one padded forward of every
        row usually beats several unpadded ones of a few rows each, but not a short prompt padded to a long one."""
        left = sorted(((self._prefill_end(s) - s.prefilled, i) for i, s in enumerate(seqs)), reverse=True)
        left = [(r, i) for r, i in left if r > 0]  # (the end first: it may restore a prefix)
        if not left:
            return None
        sizes = [r for r, _ in left]
        widths = sorted(set(sizes))
        if len(widths) > 32:  # bounded work per step however many slots: 32 widths spread over the range
            widths = [widths[j * (len(widths) - 1) // 31] for j in range(32)]
        neg = [-r for r in sizes]  # ascending, for bisect
        before = [0]
        for r in sizes:
            before.append(before[-1] + r)

        def cost(rows: int, width: int) -> int:
            return PREFILL_FORWARD_COST + rows * (PREFILL_ROW_COST + width) if rows else 0

        best, pick = None, None
        for k in range(1, min(len(sizes), budget) + 1):
            cap = budget // k
            for n in {min(w, cap) for w in widths if w >= sizes[k - 1]} | {min(cap, sizes[0])}:
                full = min(k, bisect.bisect_right(neg, -n))  # the first `full` rows feed n, the others all they have
                real = full * n + before[k] - before[full]
                past = min(k, bisect.bisect_left(neg, -n))  # rows of the group with tokens left after this forward
                rest = max(sizes[0] - n, sizes[k] if k < len(sizes) else 0)
                total = cost(k, min(n, sizes[0])) + cost(past + len(sizes) - k, rest)
                if best is None or (total, -real) < best:
                    best, pick = (total, -real), (k, n, real)
        k, n, real = pick
        return [seqs[i] for _, i in sorted(left[:k], key=lambda x: x[1])], n, real

    def _prefill_batch(self, group: list[_Seq], n: int) -> int:
        """Feed up to `n` more prompt tokens of every sequence of `group` (each to its next stop at most) in one
        forward of a batched cache, rows right-padded to the longest slice (`HybridLM.forward`'s `fed`: exact;
        rows of different lengths attend within their own), so a burst of requests prefills as large matrix
        products, not one prompt at a time. The rows are gathered from where each sequence's state is and stay
        in the new batch (the next forward, or the join, gathers from it). Returns the positions the forward
        computed, padding included."""
        take = [min(n, self._prefill_end(s) - s.prefilled) for s in group]
        width = max(take)
        batch = self._gather([(s.cache, s.row) for s in group], room=max(s.prefilled for s in group) + width + 16)
        chunk = torch.tensor([s.req.prompt_ids[s.prefilled:s.prefilled + t] + [0] * (width - t)
                              for s, t in zip(group, take)], device=self._device)
        fed = None if min(take) == width else torch.tensor(take, device=self._device)
        logits = self.model(chunk, batch, last_only=True, fed=fed)[:, -1].float().cpu()  # (rows, V)
        for i, (s, t) in enumerate(zip(group, take)):
            prompt = s.req.prompt_ids
            s.prefilled += t
            s.cache, s.row = batch, i  # no copy back: the next forward or the join gathers from here
            if self.prefix_cache is not None and self._stores_at(s, s.prefilled):
                self.prefix_cache.store(prompt, batch, row=i)
            self.stats["prompt_tokens"] += t
            self._prompt_fed(s, logits[i])
        return width * len(group)

    def _prefill(self, s: _Seq, budget: int) -> int:
        """Feed up to `budget` more prompt tokens of `s`; sample its first token when the prompt is done."""
        prompt = s.req.prompt_ids
        end = self._prefill_end(s)
        a = s.prefilled
        b = min(end, a + budget)
        if s.cache is None or s.cache.batch_size != 1:  # a cache of its own (from a batched forward's row)
            s.cache, s.row = self._gather([(s.cache, s.row)], room=len(prompt) + 16), 0
        chunk = torch.tensor([prompt[a:b]], device=self._device)
        want_prompt_lp = s.params.prompt_logprobs is not None
        # sampling runs on the CPU (per-request generators): logits come back there, float32
        if self._drafter is None:
            logits = self.model(chunk, s.cache, last_only=not want_prompt_lp)[0].float().cpu()  # (L or 1, V)
        else:  # the MTP head sees every prompt position whose next token is known; the last one waits
            if s.mtp_cache is None:
                s.mtp_cache = self._drafter.new_cache(1, capacity=len(prompt) + 16)
            hidden = self.model(chunk, s.cache, return_hidden=True)  # (1, L, d)
            if self.prefix_cache is not None:
                s.block_hidden.append(hidden[0])
            logits = self.model.lm_head(hidden if want_prompt_lp else hidden[:, -1:])[0].float().cpu()
            self._drafter.prefill(s.mtp_cache, hidden[0], prompt[a + 1:b + 1])
            if b == len(prompt):
                s.mtp_hidden = hidden[0, -1:]
        if want_prompt_lp:
            targets = torch.tensor(prompt[a + 1:b + 1])
            s.prompt_logprobs += sequence_logprobs(logits[:len(targets)], targets, s.params.prompt_logprobs)
        s.prefilled = b
        self.stats["prompt_tokens"] += b - a
        if self.prefix_cache is not None and self._stores_at(s, b):
            self.prefix_cache.store(prompt, s.cache, hidden=torch.cat(s.block_hidden) if s.block_hidden else None)
            if b % self.prefix_cache.block_size == 0:  # a block: the next entry's hidden states start after it
                s.block_hidden = []
        self._prompt_fed(s, logits[-1])
        return b - a

    def _prompt_fed(self, s: _Seq, logits: torch.Tensor | None) -> None:
        """After a prefill of `s` (logits (V,) at its last fed token): at the prompt's end, its first token (or
        the end, for max_tokens 0); one token before it with `defer_last`, the last prompt token goes to the
        first decode step (`pending`), and the prompt counts as fed."""
        prompt = s.req.prompt_ids
        if s.prefilled == len(prompt):
            if s.params.max_tokens == 0:
                s.finish_reason = "length"
            else:
                self._accept(s, logits)
        elif s.defer_last and s.prefilled == len(prompt) - 1:
            s.pending, s.prefilled = prompt[-1], len(prompt)
            self.stats["prompt_tokens"] += 1

    def _restore_prefix(self, s: _Seq) -> None:
        """Start `s` from the longest cached prefix of its prompt; not when it wants prompt log-probs (they need
        every position's logits)."""
        if self.prefix_cache is None or s.params.prompt_logprobs is not None:
            return
        hit = self.prefix_cache.lookup(s.req.prompt_ids)
        n = hit.tokens
        if n:
            s.cache, s.row = self.model.new_cache(1, capacity=len(s.req.prompt_ids) + 16), 0
            self.prefix_cache.restore(hit, s.cache)
            s.prefilled = s.cached_tokens = n
            self._prompt_fed(s, None)  # the whole prompt but its last token: nothing left to prefill
            if self._drafter is not None:  # the head sees positions 0..n-1 with their next tokens
                s.mtp_cache = self._drafter.new_cache(1, capacity=len(s.req.prompt_ids) + 16)
                hidden = hit.hidden
                self._drafter.prefill(s.mtp_cache, hidden, s.req.prompt_ids[1:n + 1])
                s.block_hidden = [hidden[n - n % self.prefix_cache.block_size:]]  # since the last block boundary

    def _store_finished(self) -> None:
        """Keep the state of each finished row's sequence (prompt and output but its last token, never fed) in the
        prefix cache: a chat's next turn sends it back as its prompt."""
        for i, s in enumerate(self._running):
            ids = s.req.prompt_ids + s.out
            if s.finish_reason in ("stop", "length") and int(self._cache.lengths[i]) == len(ids) - 1:
                self.prefix_cache.store(ids, self._cache, row=i)

    def _decode(self) -> None:
        if self._drafter is not None:
            return self._decode_speculative()
        feed = torch.tensor([[s.pending if s.pending is not None else 0] for s in self._running], device=self._device)
        logits = self._decoder.step(feed) if self._decoder is not None else self.model(feed, self._cache)[:, -1]
        logits = logits.float().cpu()  # (n, V)
        # plain greedy rows (no bias, penalties, bans or grammar): every row's argmax in one op
        argmax = logits.argmax(-1).tolist() if any(self._plain_greedy(s) for s in self._running) else None
        for i, (s, row) in enumerate(zip(self._running, logits)):
            if s.finish_reason is None:
                self._accept(s, row, argmax=argmax[i] if argmax is not None and self._plain_greedy(s) else None)

    def _decode_speculative(self) -> None:
        """Draft K tokens per row with the MTP head, verify the K+1 positions in one forward, keep each row's
        accepted tokens and roll its caches back past them (hytron.infer.speculative). Under decode_mode "static"
        and "compile", verification and greedy drafting run the static steps (`StaticSpeculation`)."""
        rows, k, spec = self._running, self.speculative_tokens, self._spec
        dev = self._device
        if spec is not None and all(s.params.greedy and not s.params.logit_bias for s in rows):
            # greedy drafting and verification in one static step: each row's positions the head has not seen
            # padded to K+1 (the pad rolled back), its drafts fed to the verification without a host round trip
            hidden, tails, keep = self._spec_pending(rows, k)
            drafts_t, hidden, logits = spec.greedy(hidden, tails, keep,
                                                   torch.tensor([[s.pending] for s in rows], device=dev),
                                                   self._ban_bias([self._banned(s) for s in rows]))
            drafts, qs = drafts_t.tolist(), None
        else:
            drafts, qs = self._drafter.draft(self._mtp_cache, [s.mtp_hidden for s in rows],
                                             [s.out[-s.mtp_hidden.size(0):] for s in rows], [s.params for s in rows],
                                             [s.generator for s in rows], [self._banned(s) for s in rows])
            feed = torch.tensor([[s.pending] + d for s, d in zip(rows, drafts)], device=dev)  # (n, K+1)
            if spec is not None:
                hidden, logits = spec.verify(feed)
        if spec is not None:
            if spec.compile_seconds:
                self.stats["decode_compile_ms"] += round(spec.compile_seconds * 1000)
                spec.compile_seconds = 0.0
        else:
            self._cache.track(True)
            hidden = self.model(feed, self._cache, return_hidden=True)  # (n, K+1, d)
            logits = self.model.lm_head(hidden)
        logits = logits.float().cpu()  # (n, K+1, V)
        # plain greedy rows (no bias, penalties, bans or grammar): the argmax of every position in one op
        argmax = logits.argmax(-1).tolist() if any(self._plain_greedy(s) for s in rows) else None
        keep = []
        for i, s in enumerate(rows):
            kept = 1  # the last accepted token, fed first
            if s.finish_reason is None:
                row, draft_row = logits[i], drafts[i]
                choices = argmax[i] if argmax is not None and self._plain_greedy(s) else None
                for j in range(k + 1):
                    draft = draft_row[j] if j < k else None
                    token = self._accept(s, row[j], draft, qs[i][j] if qs is not None and j < k else None,
                                         choices[j] if choices is not None else None)
                    if s.finish_reason is not None or token != draft:
                        break
                    kept += 1
                s.drafts, s.draft_tokens, s.accepted_tokens = s.drafts + 1, s.draft_tokens + k, \
                    s.accepted_tokens + kept - 1
                self.stats.update(spec_drafts=1, spec_draft_tokens=k, spec_accepted_tokens=kept - 1)
            keep.append(kept)
            s.mtp_hidden = hidden[i, :kept]  # the head sees these positions at the next draft
        self._cache.rollback(torch.tensor(keep))

    @staticmethod
    def _spec_pending(rows: list[_Seq], k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The positions the MTP head has not seen yet, for the static draft step: hidden (n, K+1, d) and next
        tokens (n, K+1), zero past each row's count m (n,)."""
        m = [s.mtp_hidden.size(0) for s in rows]
        first = rows[0].mtp_hidden
        if len(rows) == 1 and m[0] == k + 1:  # batch 1, every draft kept: the last verify's hidden states as they are
            hidden = first[None]
        else:
            hidden = first.new_zeros(len(rows), k + 1, first.size(-1))
            for r, s in enumerate(rows):
                hidden[r, :m[r]] = s.mtp_hidden
        tails = torch.tensor([s.out[-n:] + [0] * (k + 1 - n) for s, n in zip(rows, m)], device=first.device)
        return hidden, tails, torch.tensor(m, device=first.device)

    def _ban_bias(self, banned: list[tuple[int, ...]]) -> torch.Tensor | None:
        """The draft step's additive bias for the rows' banned ids (-inf), None when nothing is banned; kept per
        distinct combination (it changes only when a row's thinking ends or the batch changes)."""
        if not any(banned):
            return None
        key = tuple(banned)
        bias = self._bans.get(key)
        if bias is None:
            if len(self._bans) > 64:
                self._bans.clear()
            bias = torch.zeros(len(banned), self.vocab_size, device=self._device)
            for r, ids in enumerate(banned):
                bias[r, list(ids)] = float("-inf")
            self._bans[key] = bias
        return bias

    def _banned(self, s: _Seq) -> tuple[int, ...]:
        """Ids `s` may not sample now: the thinking markers once its thinking is over (or was never on), and the
        stop ids while it still thinks before a constrained answer (it must reach the answer)."""
        if s.constraint is not None and s.budget is not None and s.budget.thinking:
            return tuple(s.stop_ids)
        return self._think_ids if (s.budget is not None and not s.budget.thinking) else ()

    def _plain_greedy(self, s: _Seq) -> bool:
        """Whether the choice of `s` is the bare argmax of its logits for its whole step: greedy, no logit bias,
        penalties, grammar or thinking budget (which bans ids and forces tokens as the thinking goes)."""
        p = s.params
        return p.greedy and not p.logit_bias and not p.penalized and s.constraint is None and s.budget is None

    def _accept(self, s: _Seq, logits: torch.Tensor, draft: int | None = None,
                q: torch.Tensor | None = None, argmax: int | None = None) -> int:
        """Choose the next token of `s` from its logits (V,), record it, release text, check for the end.
        With a `draft` token (drawn from q, None if greedy), choose by speculative sampling (`verify_draft`):
        the same distribution, keeping the draft when it can. `argmax`: the argmax of these logits, computed by
        the caller for a row that `_plain_greedy` says chooses just that. Returns the token."""
        p = s.params
        forced = s.budget.forced() if s.budget is not None else None
        constrained = s.constraint is not None and not (s.budget is not None and s.budget.thinking)
        if forced is not None:
            token = forced
        elif argmax is not None:
            token = argmax
        else:
            banned = self._banned(s)
            x = s.constraint.mask(logits) if constrained else logits
            token = (sample(x, p, s.generator, banned, s.history) if draft is None
                     else verify_draft(x, p, s.generator, draft, q, banned, s.history))
        if constrained:
            s.constraint.accept(token)
        now = time.monotonic()
        s.first_token_time = s.first_token_time or now
        s.out.append(token)
        if s.history is not None:
            s.history.add(token)  # forced tokens too: vLLM's penalties count every output token
        s.pending = token
        self.stats["generation_tokens"] += 1
        delta = Delta(token_ids=[token])
        if p.logprobs is not None:
            lp = token_logprob(logits, token, p.logprobs)
            s.logprobs.append(lp)
            delta.logprobs.append(lp)
        in_thinking = s.budget.observe(token, forced=forced is not None) if s.budget is not None else False
        if token in s.stop_ids:
            s.finish_reason, s.stop_reason = "stop", token
        elif in_thinking:
            s.reasoning_tokens += 1
            self.stats["reasoning_tokens"] += 1
            delta.reasoning = (s.reasoning.flush() if token == self.think_end_id
                               else s.reasoning.push(token, s.req.deltas_read))
        else:
            delta.text = s.answer.push(token, s.req.deltas_read)
            if s.answer.stopped is not None:
                s.finish_reason, s.stop_reason = "stop", s.answer.stopped
        if s.finish_reason is None and len(s.out) >= p.max_tokens:
            s.finish_reason = "length"
        if s.finish_reason is not None:
            s.last = delta  # sent by _finish, with the flushed text and the finish reason
        elif s.req.deltas_read:  # else nobody reads it: 16 requests x 64 tokens were 1,024 deltas to hand over
            s.req._emit(delta)
        return token

    def _finish(self, s: _Seq, reason: str, error: str | None = None) -> None:
        last = s.last or Delta()
        if reason not in ("cancelled", "error"):
            last.reasoning += s.reasoning.flush()
            last.text += s.answer.flush()
        reasoning = s.reasoning.text[:s.reasoning.released]
        answer = s.answer.text[:s.answer.released]
        last.finish_reason = reason
        self.stats[f"finished_{reason}"] += 1
        c = Completion(request_id=s.req.id, prompt_ids=s.req.prompt_ids, token_ids=list(s.out), text=answer,
                       reasoning=reasoning, finish_reason=reason, stop_reason=s.stop_reason,
                       reasoning_tokens=s.reasoning_tokens,
                       thinking_forced=bool(s.budget is not None and s.budget.forced_end),
                       logprobs=s.logprobs, prompt_logprobs=s.prompt_logprobs, arrival_time=s.req.arrival_time,
                       first_token_time=s.first_token_time, finish_time=time.monotonic(), error=error,
                       drafts=s.drafts, draft_tokens=s.draft_tokens, accepted_tokens=s.accepted_tokens,
                       cached_tokens=s.cached_tokens)
        s.req._finish(c, last)


def tokenizer_settings(tokenizer, decode: Callable[[Sequence[int]], str] | None = None) -> dict:
    """The engine settings a tokenizer fixes, in one place for every caller (`hytron serve`, `hytron chat`,
    evaluation, distillation and GRPO rollouts), so a prompt under a thinking budget decodes to the same tokens
    through each: end-of-turn stop ids, the thinking markers, the ids whose text holds a newline (where a budget
    may end the thinking) and the id of "\\n" itself (the line end a forced close writes first). `decode`
    defaults to the tokenizer's text without special tokens."""
    strs = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
    line = tokenizer.encode("\n")
    return {"stop_ids": tokenizer.stop_ids, "think_start_id": tokenizer.think_start_id,
            "think_end_id": tokenizer.think_end_id, "newline_ids": newline_ids(enumerate(strs)),
            "line_end_id": line[0] if len(line) == 1 else None,
            "decode": decode or (lambda ids: tokenizer.decode(ids, skip_special=True))}


def generate(model, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams] | None = None,
             *, tokenizer=None, **engine_kwargs) -> list[Completion]:
    """Generate for many prompts in this thread with continuous batching; results in prompt order.

    `engine_kwargs` go to `Engine` (max_slots, stop_ids, decode, think_end_id, newline_ids, ...); with a
    `tokenizer`, what it fixes comes from `tokenizer_settings` (as `Engine.for_tokenizer`).
    """
    plist = list(params) if isinstance(params, Sequence) else [params or SamplingParams()] * len(prompts)
    if len(plist) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(plist)} sampling params")
    engine_kwargs.setdefault("max_waiting", len(prompts))
    was_training = model.training
    try:
        engine = (Engine.for_tokenizer(model, tokenizer, **engine_kwargs) if tokenizer is not None
                  else Engine(model, **engine_kwargs))
        reqs = [engine.submit(p, sp) for p, sp in zip(prompts, plist)]
        for r in reqs:
            r.wants_only_the_result()
        engine.run_until_idle()
    finally:
        model.train(was_training)  # the engine runs in eval mode; leave the caller's model as it was
    return [r.result() for r in reqs]


def speculative_acceptance(model, prompts: Sequence[Sequence[int]], k: int = 3, max_tokens: int = 32) -> dict:
    """How well the model's MTP head drafts for the model itself on `prompts`: greedy decoding of `max_tokens`
    per prompt with `speculative_tokens=k` (the tokens are plain decoding's; only the drafts are scored).

    Returns {"k", "prompts", "new_tokens", "acceptance_rate": accepted / drafted tokens, "mean_accepted_length":
    tokens released per verify step (1 .. k+1; vLLM's and TensorRT-LLM's acceptance length)}. Fine-tuning the
    model without its head shows here first: the head keeps drafting what the old model would have said."""
    if not prompts:
        raise ValueError("speculative_acceptance: no prompts")
    done = generate(model, prompts, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True),
                    speculative_tokens=k, max_slots=len(prompts))
    steps, drafted, accepted = (sum(getattr(c, f) for c in done) for f in ("drafts", "draft_tokens", "accepted_tokens"))
    return {"k": k, "prompts": len(prompts), "new_tokens": sum(len(c.token_ids) for c in done),
            "acceptance_rate": accepted / drafted if drafted else 0.0,
            "mean_accepted_length": 1 + accepted / steps if steps else 1.0}
