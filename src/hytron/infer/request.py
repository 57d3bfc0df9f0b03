"""What a caller holds while the engine generates: the request handle, the streamed deltas, the final result."""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hytron.infer.sampling import SamplingParams, TokenLogprob


class EngineError(RuntimeError):
    """Base of the engine's refusals."""


class QueueFull(EngineError):
    """The waiting queue is at its bound: retry later (servers answer 429)."""


class EngineClosed(EngineError):
    """The engine was shut down."""


class PromptTooLong(ValueError):
    """prompt + max_tokens exceed the engine's `max_len`; carries the counts for a helpful error."""

    def __init__(self, prompt_tokens: int, max_tokens: int, max_len: int):
        self.prompt_tokens, self.max_tokens, self.max_len = prompt_tokens, max_tokens, max_len
        super().__init__(f"This model's maximum context length is {max_len} tokens. However, you requested "
                         f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in "
                         f"the completion). Please reduce the length of the prompt or max_tokens.")


@dataclass
class Delta:
    """What one engine step added to a request: new ids, released text split into reasoning and answer."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""  # answer text released by this step
    reasoning: str = ""  # thinking text released by this step
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None  # set on the last delta: stop | length | cancelled | error


@dataclass
class Completion:
    """The finished request."""

    request_id: int
    prompt_ids: list[int]
    token_ids: list[int]  # every generated id (thinking, </think>, answer; a sampled stop id included)
    text: str  # the answer (stop string removed unless include_stop_str_in_output)
    reasoning: str  # the thinking text ("" with thinking off)
    finish_reason: str  # stop | length | cancelled | error
    stop_reason: str | int | None  # the stop string or stop id that ended it
    reasoning_tokens: int  # thinking tokens, the closing </think> included
    thinking_forced: bool  # the budget (not the model) closed the thinking
    logprobs: list[TokenLogprob]
    prompt_logprobs: list[TokenLogprob]  # for prompt tokens 1..n-1 (the first has no context)
    arrival_time: float
    first_token_time: float | None
    finish_time: float
    error: str | None = None
    # speculative decoding: verify steps this request took part in, tokens drafted, drafts accepted
    drafts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens restored from the engine's prefix cache, not prefilled

    @property
    def acceptance_rate(self) -> float | None:
        """Drafts accepted / drafted; None without speculation."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else None

    @property
    def mean_accepted_length(self) -> float | None:
        """Tokens released per verify step (accepted drafts + the one the model chose; vLLM's and TensorRT-LLM's
        acceptance length); None without speculation."""
        return 1 + self.accepted_tokens / self.drafts if self.drafts else None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class Request:
    """Handle to a submitted request: iterate it for deltas (or pass `on_delta`), `result()` to wait, `cancel()`."""

    def __init__(self, request_id: int, prompt_ids: list[int], params: SamplingParams,
                 on_delta: Callable[[Delta], None] | None = None):
        self.id = request_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.arrival_time = time.monotonic()
        self._on_delta = on_delta
        self._queue: queue.SimpleQueue[Delta] | None = None if on_delta else queue.SimpleQueue()
        self._done = threading.Event()
        self._cancelled = False
        self._completion: Completion | None = None
        self._wake: Callable[[], None] = lambda: None  # set by the engine: wakes its loop
        self.decode: Callable[[list[int]], str] | None = None  # set by the engine: this request's ids -> text
        self.constraint = None  # set by the engine: what masks this request's answer tokens
        # whether anyone reads the deltas as they come; `wants_only_the_result` turns it off, and the engine then
        # sends only the last delta and decodes the text once, at the end (stop strings are still watched token
        # by token)
        self.deltas_read = True

    def wants_only_the_result(self) -> None:
        """Say that this request's deltas will not be read (the caller waits for `result()`): from now on the
        engine sends none but the last (which carries the finish reason), and skips decoding every token as it
        comes (about a third of its per-token bookkeeping); the Completion carries the whole text, ids and
        log-probs."""
        self.deltas_read = False

    def cancel(self) -> None:
        """Stop generating: the engine frees the slot at its next step and finishes with 'cancelled'."""
        self._cancelled = True
        self._wake()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Completion:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} not finished after {timeout}s")
        assert self._completion is not None
        return self._completion

    def __iter__(self) -> Iterator[Delta]:
        if self._queue is None:
            raise RuntimeError("this request streams to its on_delta callback")
        while True:
            d = self._queue.get()
            yield d
            if d.finish_reason is not None:
                return

    # ---- called by the engine thread ----
    def _emit(self, delta: Delta) -> None:
        if self._on_delta is not None:
            try:
                self._on_delta(delta)
            except Exception:  # the caller's callback failed: report it, keep the engine going
                traceback.print_exc()
        else:
            self._queue.put(delta)

    def _finish(self, completion: Completion, last: Delta) -> None:
        self._completion = completion
        self._done.set()  # before the last delta: its receiver may ask for the result at once
        self._emit(last)
