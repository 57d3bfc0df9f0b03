"""The served model: model + tokenizer + engine thread, chat prompts through the model's template, async streams.

Works on any Nemotron-H directory: hytron's own, or one written by transformers with its own tokenizer, chat
template and stop ids (`hytron.tokenizer`). Chat prompts are rendered with control-token strings in messages
encoded as text, so a client cannot forge a turn.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from hytron.infer import Completion, Delta, Engine, SamplingParams
from hytron.infer.prefix_cache import BLOCK_SIZE
from hytron.model import HybridLM
from hytron.serve.protocol import RESERVED_TEMPLATE_KWARGS
from hytron.serve.structured import Grammars
from hytron.tokenizer import Tokenizer
from hytron.tokenizer.tools import parser_for


@dataclass
class ServeConfig:
    """Server limits and defaults (all checked per request; over a limit is a 400, never a crash)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    model_name: str | None = None  # served name; default: the model directory's name
    max_slots: int = 8  # requests decoded together
    max_waiting: int = 64  # queued beyond the slots; more -> 429
    max_len: int | None = None  # context limit (prompt + completion); default: the model's
    max_tokens_limit: int = 4096  # the largest max_tokens a request may ask for
    default_max_tokens: int = 512  # chat requests that give none get min(this, room left)
    max_n: int = 8
    max_body_bytes: int = 4 * 1024 * 1024
    max_prompts: int = 64  # prompts in one completions request
    max_thinking_tokens: int | None = None  # default thinking budget (None = unlimited)
    prefill_chunk: int = 512
    reasoning_content: bool = True  # also return reasoning under the older `reasoning_content` name
    threads: int | None = None  # torch threads for the engine
    tool_parser: str | None = None  # xml | json | none; None = chosen from the chat template
    dtype: str | None = None  # compute dtype; None = fp32 on CPU, the checkpoint's own on GPU
    # HTTP: a client must send a whole request (headers and body) within `read_timeout` seconds; on SIGTERM,
    # requests in flight get `shutdown_timeout` seconds; Host must be in `allowed_hosts` (None: the bound
    # address's names, any for 0.0.0.0/::); browsers from `cors_origins` may call the API (none by default)
    read_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    allowed_hosts: tuple[str, ...] | None = None
    cors_origins: tuple[str, ...] = ()
    # connections served at once (more: the oldest idle one is closed, else the new one gets a 503); None: the
    # open-file limit less a reserve for the process's own files (`hytron.serve.http.connection_limit`)
    max_connections: int | None = None
    max_stop_bytes: int = 16384  # all stop strings of a request together (UTF-8)
    # chat templates are untrusted code: each render gets `template_seconds` (and the step and size limits of
    # `hytron.tokenizer.TemplateBudget`) on one of `template_threads` threads of its own, never the threads that
    # other requests need; more than `template_waiting` renders waiting -> 429
    template_seconds: float = 5.0
    # a grammar (response_format, forced tool calls) must compile within `grammar_seconds` in the compiler
    # process, else the request is a 400 (`hytron.serve.structured.Compiler`)
    grammar_seconds: float = 10.0
    template_threads: int = 2
    template_waiting: int = 64
    # chat template variables every chat request starts from (vLLM's --default-chat-template-kwargs), e.g.
    # {"enable_thinking": false}; a request's own chat_template_kwargs (and reasoning_effort) override them
    default_chat_template_kwargs: dict | None = None
    # draft this many tokens per step with the model's MTP head (0: off); see hytron.infer.speculative
    speculative_tokens: int = 0
    # prefix caching (hytron.infer.prefix_cache): up to `prefix_cache_mb` MiB of attention KV and Mamba state
    # snapshots of earlier prompts, every `prefix_cache_block` tokens (0 MiB: off)
    prefix_cache_mb: float = 512
    prefix_cache_block: int = BLOCK_SIZE
    # how the engine runs a decode step (hytron.infer.engine.DECODE_MODES): "compile" (default) the static-shape
    # step, torch.compiled once per process for one running request and once for any batch of several
    # (`hytron serve` does it before serving, else the first such step waits for it), "static" never compiled,
    # "eager" the model's own cached forward
    decode_mode: str = "compile"
    # an idle engine, woken by a request, waits up to this long while more keep arriving (each within 1 ms of
    # the last), so that requests sent at once prefill together (`Engine.burst_wait`); 0: start at once
    burst_wait_ms: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.burst_wait_ms <= 1000:
            raise ValueError(f"burst_wait_ms: must be in [0, 1000] (0: off), got {self.burst_wait_ms}")
        if self.prefix_cache_mb < 0:
            raise ValueError(f"prefix_cache_mb: must be >= 0 (0: off), got {self.prefix_cache_mb}")
        if self.prefix_cache_block < 1:
            raise ValueError(f"prefix_cache_block: must be >= 1 token, got {self.prefix_cache_block}")
        kw = self.default_chat_template_kwargs
        if kw is None:
            return
        if not isinstance(kw, dict):
            raise ValueError(f"default_chat_template_kwargs: must be a JSON object, got {type(kw).__name__}")
        bad = sorted(k for k in kw if not isinstance(k, str) or k in RESERVED_TEMPLATE_KWARGS or k.startswith("_"))
        if bad:
            raise ValueError(f"default_chat_template_kwargs: {bad[0]!r} is set by the request or the template "
                             "itself, not a template variable")
        if kw.get("enable_thinking") not in (None, True, False):
            raise ValueError("default_chat_template_kwargs: enable_thinking must be true or false, got "
                             f"{kw['enable_thinking']!r}")


class Backend:
    """Owns the model and the engine thread; turns chats and prompts into engine requests."""

    def __init__(self, model: HybridLM, tokenizer: Tokenizer, config: ServeConfig, name: str = "hytron"):
        self.model, self.tokenizer, self.config = model.eval(), tokenizer, config
        self.name = config.model_name or name
        self.created = int(time.time())
        self.observers: list = []  # called with every finished Completion (in the engine thread)
        self.max_len = config.max_len or model.config.max_position_embeddings
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size}")
        self.token_strs = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
        self.max_token_bytes = max(len(s.encode("utf-8", "replace")) for s in self.token_strs) or 1
        tokenizer.template_budget = dataclasses.replace(tokenizer.template_budget, seconds=config.template_seconds)
        self._templates = ThreadPoolExecutor(config.template_threads, thread_name_prefix="hytron-template")
        self._rendering: set[threading.Event] = set()  # the cancel events of renders queued or running
        self.tool_parser = parser_for(tokenizer.chat_template, config.tool_parser)
        # the tool-call markers the parser reads (kept in the text of requests that may call tools)
        self.tool_marker_ids = frozenset(tokenizer.token_to_id(t) for t in (self.tool_parser.start,
                                                                           self.tool_parser.end)) \
            if self.tool_parser else frozenset()
        self.think_ids = frozenset(i for i in (tokenizer.think_start_id, tokenizer.think_end_id) if i is not None)
        self.decode = self.decoder()
        self.grammars = Grammars(tokenizer, model.config.vocab_size, tokenizer.stop_ids, config.grammar_seconds,
                                 keep=self.tool_marker_ids)
        self.engine = Engine.for_tokenizer(
            model, tokenizer, decode=self.decode, max_slots=config.max_slots, max_waiting=config.max_waiting,
            max_len=self.max_len, prefill_chunk=config.prefill_chunk, speculative_tokens=config.speculative_tokens,
            prefix_cache_bytes=int(config.prefix_cache_mb * 2**20), prefix_block_size=config.prefix_cache_block,
            decode_mode=config.decode_mode, burst_wait=config.burst_wait_ms / 1000)
        # deltas wait in one mailbox per event loop and are handed over once per engine step (see _Mailbox)
        self._mailboxes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._mailboxes_lock = threading.Lock()
        self.engine.step_hooks.append(self._flush_mailboxes)

    @classmethod
    def load_in_engine_thread(cls, model_dir: str | Path, config: ServeConfig | None = None,
                              prepare: Callable[[Backend], None] | None = None) -> Backend:
        """`load`, with the loading (and `prepare(backend)`, e.g. compiling the decode step) done in a thread that
        then runs the engine's loop (`Engine.run`), so that every parallel torch op of the process runs in that one
        thread (`Engine.run` says why: at 2 threads, decode steps 2.5x faster than in a second thread)."""
        ready, box = threading.Event(), {}

        def main():
            try:
                if config is not None and config.threads:  # before anything compiles: kernels keep the count
                    torch.set_num_threads(config.threads)
                backend = cls.load(model_dir, config)
                if prepare is not None:
                    prepare(backend)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which raises it
                box["error"] = e
                ready.set()
                return
            box["backend"] = backend
            backend.engine.run(ready.set)

        threading.Thread(target=main, name="hytron-engine", daemon=True).start()
        ready.wait()
        if "error" in box:
            raise box["error"]
        return box["backend"]

    @classmethod
    def load(cls, model_dir: str | Path, config: ServeConfig | None = None) -> Backend:
        model_dir, config = Path(model_dir), config or ServeConfig()
        dtype = getattr(torch, config.dtype) if config.dtype else None
        model = HybridLM.from_pretrained(model_dir, dtype=dtype)
        return cls(model, Tokenizer.load(model_dir), config, name=model_dir.name)

    def start(self) -> Backend:
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.engine.start()
        return self

    def close(self) -> None:
        for cancel in list(self._rendering):  # renders stop at their next step
            cancel.set()
        self._templates.shutdown(wait=False, cancel_futures=True)
        self.engine.close()
        self.grammars.close()

    async def render(self, fn: Callable[[threading.Event], object], request=None):
        """`fn(cancel)` (a chat-template render) on the template threads; `cancel` is set when the client goes
        away (watched through the ASGI `request`) or the awaiting task is cancelled, and the render stops at
        its next step. Raises a 429 APIError when too many renders wait."""
        from hytron.serve.errors import APIError

        cfg = self.config
        if len(self._rendering) >= cfg.template_threads + cfg.template_waiting:
            raise APIError(429, f"server busy: {len(self._rendering)} chat templates are rendering or waiting",
                           code="queue_full", headers={"Retry-After": "1"})
        cancel = threading.Event()
        self._rendering.add(cancel)
        watcher = asyncio.create_task(_watch_disconnect(request, cancel)) if request is not None else None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._templates, functools.partial(fn, cancel))
        finally:
            cancel.set()
            self._rendering.discard(cancel)
            if watcher is not None:
                watcher.cancel()

    # ---- text <-> ids -----------------------------------------------------------------------------
    def decoder(self, skip_special_tokens: bool = True, spaces_between_special_tokens: bool = True,
                keep: frozenset[int] = frozenset(), hide: frozenset[int] = frozenset()) -> Callable[[Sequence[int]],
                                                                                             str]:
        """One request's ids -> text function, with vLLM's detokenizer options: special tokens are left out
        when `skip_special_tokens` (vLLM's default), except the ids in `keep` (the tool-call markers a parser
        reads); ids in `hide` are always left out (the thinking markers the engine splits reasoning on).
        `spaces_between_special_tokens` (vLLM's fast detokenizer): true, the tokenizer decodes the kept ids
        as one sequence; false, each kept special token is written as its own text, nothing around it, and each
        run of other tokens between them is decoded alone, so no decoder puts a space at a special token (with
        byte-level tokenizers, hytron's and Nemotron's, both give the same text)."""
        tok = self.tokenizer
        special = tok.special_ids
        hidden = ((special if skip_special_tokens else frozenset()) - keep) | hide
        if spaces_between_special_tokens or skip_special_tokens and not keep:
            return lambda ids: tok.decode([i for i in ids if i not in hidden])

        def decode(ids: Sequence[int]) -> str:
            out, run = [], []
            for i in ids:
                if i in hidden:
                    continue
                if i in special:
                    out.append(tok.decode(run))
                    out.append(self.token_strs[i])
                    run = []
                else:
                    run.append(i)
            out.append(tok.decode(run))
            return "".join(out)

        return decode

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """A raw prompt's ids; the post-processor's tokens (e.g. BOS) added as vLLM and transformers add them."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def min_tokens(self, texts: Sequence[str]) -> int:
        """A lower bound on the tokens of `texts`, without tokenizing: no token spells more than
        `max_token_bytes` bytes (halved again, in case a normalizer shortens the text)."""
        return sum(len(t.encode("utf-8", "replace")) for t in texts) // (2 * self.max_token_bytes)

    def check_ids(self, ids: Sequence[int], param: str) -> None:
        from hytron.serve.errors import APIError

        vocab = self.tokenizer.vocab_size  # once: the property asks the tokenizers library (1M ids took minutes)
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise APIError(400, f"{param}: token ids must be in [0, {vocab}), got {bad[:5]}",
                           param, "limit_exceeded")

    def chat_prompt(self, messages: list[dict], enable_thinking: bool | None, tools: list[dict] | None = None,
                    add_generation_prompt: bool = True, cancel: threading.Event | None = None,
                    template_kwargs: dict | None = None) -> tuple[list[int], bool]:
        """(prompt ids, thinking): thinking is True when the rendered prompt leaves a <think> section open.
        Control-token strings inside the messages are encoded as text; the render stops once `cancel` is set."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                 enable_thinking=enable_thinking, tools=tools, sanitize=True,
                                                 _cancel=cancel, **(template_kwargs or {}))
        return ids, self.opens_thinking(ids)

    def opens_thinking(self, ids: Sequence[int]) -> bool:
        t = self.tokenizer
        if t.think_start_id is None or t.think_end_id is None:
            return False
        last_open = max((i for i, x in enumerate(ids) if x == t.think_start_id), default=-1)
        last_close = max((i for i, x in enumerate(ids) if x == t.think_end_id), default=-1)
        return last_open > last_close

    # ---- async bridge -------------------------------------------------------------------------------
    def _flush_mailboxes(self) -> None:  # the engine's step hook
        with self._mailboxes_lock:
            boxes = list(self._mailboxes.values())
        for box in boxes:
            box.flush()

    def submit(self, prompt_ids: list[int], params: SamplingParams,
               decode: Callable[[Sequence[int]], str] | None = None, constraint=None) -> Stream:
        """Submit to the engine (`decode`: this request's ids -> text, see `decoder`; `constraint`: its answer's
        grammar); the returned stream yields Deltas in the event loop (raises engine refusals)."""
        self.engine.start()
        loop = asyncio.get_running_loop()
        with self._mailboxes_lock:
            mailbox = self._mailboxes.get(loop) or self._mailboxes.setdefault(loop, _Mailbox(loop))
        queue: asyncio.Queue[Delta] = asyncio.Queue()
        handle: list = []
        live = [True]  # someone reads the deltas as they come (until `Stream.result` says it waits for the end)

        def on_delta(delta: Delta) -> None:  # engine thread -> event loop
            last = delta.finish_reason is not None
            if last and handle:
                for observe in self.observers:
                    observe(handle[0].result())
            mailbox.post(queue, delta, wake=live[0] or last)

        handle.append(self.engine.submit(prompt_ids, params, on_delta=on_delta, decode=decode,
                                         constraint=constraint))
        return Stream(handle[0], queue, live)


class _Mailbox:
    """Deltas from the engine thread to one event loop's queues: `post` keeps them, `flush` (at the end of each
    engine step) wakes the loop once to hand them all over, each queue's in order, when one of them is worth a
    wake-up: a request's last delta, or any delta of a request read as it streams.

    Waking the loop costs the engine more than a system call: the loop's thread then takes the GIL, and the
    engine waits for it (up to the 1 ms switch interval `hytron serve` sets). `loop.call_soon_threadsafe` per
    delta, with 16 requests decoding, took 16% of a `hytron serve` process's time under
    bench/bench_serve_peer.py (py-spy); now requests that wait for their whole answer wake it once, at the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.items: collections.deque = collections.deque()
        self.lock = threading.Lock()
        self.scheduled = self.wake = False

    def post(self, queue: asyncio.Queue, delta: Delta, wake: bool = True) -> None:
        with self.lock:
            self.items.append((queue, delta))
            self.wake |= wake

    def flush(self) -> None:
        with self.lock:
            if self.scheduled or not self.wake:
                return
            self.scheduled, self.wake = True, False
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is gone (shutting down): nobody listens
            with self.lock:
                self.items.clear()
                self.scheduled = self.wake = False

    def _drain(self) -> None:  # in the loop
        with self.lock:
            items, self.items = self.items, collections.deque()
            self.scheduled = False
        for queue, delta in items:
            queue.put_nowait(delta)


async def _watch_disconnect(request, cancel: threading.Event) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


class Stream:
    """Async view of one engine request."""

    def __init__(self, request, queue: asyncio.Queue, live: list[bool] | None = None):
        self.request, self.queue = request, queue
        self._live = live if live is not None else [True]

    async def __aiter__(self) -> AsyncIterator[Delta]:
        while True:
            d = await self.queue.get()
            yield d
            if d.finish_reason is not None:
                return

    async def result(self) -> Completion:
        self._live[0] = False  # the deltas before the last need not wake the event loop
        self.request.wants_only_the_result()  # nor carry text: the engine decodes it once, at the end
        async for _ in self:
            pass
        return self.request.result()

    def cancel(self) -> None:
        self.request.cancel()
