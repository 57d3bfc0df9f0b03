"""The generation endpoints: `/v1/chat/completions` and `/v1/completions`, plain JSON or SSE streams.

Reasoning is returned apart from the answer in `message.reasoning` (vLLM's name) and `reasoning_content`
(the older DeepSeek/llama.cpp name), and streamed as `delta.reasoning` deltas. A client that disconnects
cancels its requests in the engine (its slots free up within one step).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from hytron.infer import Completion, EngineClosed, PromptTooLong, QueueFull, SamplingParams, TokenLogprob
from hytron.serve.backend import Backend, Stream
from hytron.serve.errors import APIError, sse_error
from hytron.serve.protocol import ChatCompletionRequest, CompletionRequest, _Sampling

LIMIT = "limit_exceeded"  # the code of refusals that depend on the server's settings, not on the schema


def check_model(backend: Backend, model: str | None) -> None:
    if model is not None and model != backend.name:
        raise APIError(404, f"The model `{model}` does not exist. Served: `{backend.name}`.", "model",
                       "model_not_found")


def _check_common(backend: Backend, body: _Sampling) -> None:
    check_model(backend, body.model)
    if body.n > backend.config.max_n:
        raise APIError(400, f"n must be at most {backend.config.max_n}, got {body.n}", "n", LIMIT)
    if body.stop_token_ids:
        backend.check_ids(body.stop_token_ids, "stop_token_ids")


def _max_tokens(backend: Backend, asked: int | None, prompt_len: int, default: int, param: str = "messages") -> int:
    cfg = backend.config
    if asked is not None and asked > cfg.max_tokens_limit:
        raise APIError(400, f"max_tokens must be at most {cfg.max_tokens_limit}, got {asked}", "max_tokens", LIMIT)
    n = asked if asked is not None else max(1, min(default, cfg.max_tokens_limit, backend.max_len - prompt_len))
    if prompt_len + n > backend.max_len:
        e = PromptTooLong(prompt_len, n, backend.max_len)
        raise APIError(400, str(e), param, "context_length_exceeded")
    return n


def check_prompt_size(backend: Backend, texts: list[str], param: str) -> None:
    """Refuse a prompt that cannot fit before spending CPU on tokenizing all of it (a 4 MB body takes seconds)."""
    least = backend.min_tokens(texts)
    if least > backend.max_len:
        raise APIError(400, f"This model's maximum context length is {backend.max_len} tokens. However, the "
                       f"{param} holds at least {least} tokens. Please reduce the length of the {param}.", param,
                       "context_length_exceeded")


def _params(body: _Sampling, max_tokens: int, i: int, **kw) -> SamplingParams:
    try:
        return SamplingParams(
            max_tokens=max_tokens, temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p, top_k=max(0, body.top_k or 0),
            min_p=body.min_p or 0.0, seed=None if body.seed is None else body.seed + i, stop=body.stops(),
            stop_token_ids=tuple(body.stop_token_ids or ()), ignore_eos=body.ignore_eos,
            include_stop_str_in_output=body.include_stop_str_in_output, **kw)
    except ValueError as e:
        raise APIError(400, str(e)) from None


def _submit(backend: Backend, jobs: list[tuple[list[int], SamplingParams]]) -> list[Stream]:
    capacity = backend.engine.max_slots + backend.engine.max_waiting
    if len(jobs) > capacity:  # could never be admitted, so no retry would help: 400, not 429
        raise APIError(400, f"this request needs {len(jobs)} sequences (n x prompts) but the server holds at most "
                       f"{capacity}", "n", LIMIT)
    streams: list[Stream] = []
    try:
        for ids, params in jobs:
            streams.append(backend.submit(ids, params))
    except BaseException as e:
        for s in streams:
            s.cancel()
        if isinstance(e, QueueFull):
            raise APIError(429, f"server busy: {e}", code="queue_full", headers={"Retry-After": "1"}) from None
        if isinstance(e, EngineClosed):
            raise APIError(503, "the engine is shutting down") from None
        if isinstance(e, PromptTooLong):
            raise APIError(400, str(e), "prompt", "context_length_exceeded") from None
        if isinstance(e, ValueError):
            raise APIError(400, str(e)) from None
        raise
    return streams


async def _watch_disconnect(request: Request, streams: list[Stream]) -> None:
    """Cancel the engine requests when the HTTP client goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            for s in streams:
                s.cancel()
            return


async def _results(request: Request, streams: list[Stream]) -> list[Completion]:
    watcher = asyncio.create_task(_watch_disconnect(request, streams))
    try:
        results = [await s.result() for s in streams]
    finally:
        watcher.cancel()
    errors = [r.error for r in results if r.finish_reason == "error"]
    if errors:
        raise APIError(500, f"generation failed: {errors[0]}")
    return results


async def _merged(streams: list[Stream]) -> AsyncIterator[tuple[int, object]]:
    """Deltas of several streams as they come: (choice index, delta)."""
    if len(streams) == 1:
        async for d in streams[0]:
            yield 0, d
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, s: Stream) -> None:
        async for d in s:
            await queue.put((i, d))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    left = len(streams)
    try:
        while left:
            i, d = await queue.get()
            left -= d.finish_reason is not None
            yield i, d
    finally:
        for t in tasks:
            t.cancel()


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _usage(prompt_tokens: int, results: list[Completion]) -> dict:
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion,
            "completion_tokens_details": {"reasoning_tokens": sum(r.reasoning_tokens for r in results)}}


def _stream_response(request: Request, streams: list[Stream], events) -> StreamingResponse:
    async def body():
        watcher = asyncio.create_task(_watch_disconnect(request, streams))
        try:
            async for chunk in events():
                yield chunk
        finally:
            watcher.cancel()
            for s in streams:
                s.cancel()  # a no-op when finished; frees the slot when the client went away

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---- chat -----------------------------------------------------------------------------------------------
def _chat_logprobs(backend: Backend, lps: list[TokenLogprob]) -> dict:
    def entry(i: int, lp: float) -> dict:
        s = backend.token_strs[i] if i < len(backend.token_strs) else ""
        return {"token": s, "logprob": lp, "bytes": list(s.encode())}

    return {"content": [{**entry(x.token_id, x.logprob), "top_logprobs": [entry(i, v) for i, v in x.top]}
                        for x in lps]}


async def chat_completions(backend: Backend, body: ChatCompletionRequest, request: Request):
    _check_common(backend, body)
    cfg = backend.config
    messages = []
    for m in body.messages:
        msg = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.role == "assistant" and (m.reasoning_content or m.reasoning):
            msg["reasoning_content"] = m.reasoning_content or m.reasoning
        messages.append(msg)
    enable = body.chat_template_kwargs.enable_thinking if body.chat_template_kwargs else None
    if body.reasoning_effort == "none":
        enable = False
    check_prompt_size(backend, [m["content"] for m in messages if m["role"] == "user"], "messages")
    try:  # tokenizing and template rendering off the event loop: one big chat must not stall the others
        ids, thinking = await run_in_threadpool(backend.chat_prompt, messages, enable)
    except ValueError as e:
        raise APIError(400, str(e), "messages") from None
    budget = next((b for b in (body.thinking_token_budget, body.max_thinking_tokens, cfg.max_thinking_tokens)
                   if b is not None), None)
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = _max_tokens(backend, asked, len(ids), cfg.default_max_tokens)
    top = body.top_logprobs or 0
    jobs = [(ids, _params(body, max_tokens, i, logprobs=top if body.logprobs else None, thinking=thinking,
                          max_thinking_tokens=budget if thinking else None)) for i in range(body.n)]
    streams = _submit(backend, jobs)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    show_reasoning = body.include_reasoning

    def reasoning_fields(text: str | None) -> dict:
        if not show_reasoning:
            return {}
        return {"reasoning": text, **({"reasoning_content": text} if cfg.reasoning_content else {})}

    if not body.stream:
        results = await _results(request, streams)
        choices = [{"index": i, "message": {"role": "assistant", "content": r.text,
                                            **reasoning_fields(r.reasoning if thinking else None)},
                    "logprobs": _chat_logprobs(backend, r.logprobs) if body.logprobs else None,
                    "finish_reason": r.finish_reason, "stop_reason": r.stop_reason} for i, r in enumerate(results)]
        return JSONResponse({"id": rid, "object": "chat.completion", "created": created, "model": backend.name,
                             "choices": choices, "usage": _usage(len(ids), results)})

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    extra = {"usage": None} if include_usage else {}

    def chunk(i: int, delta: dict, finish: str | None = None, logprobs=None) -> str:
        return _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": backend.name,
                     "choices": [{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
                     **extra})

    async def events():
        for i in range(body.n):
            yield chunk(i, {"role": "assistant", "content": ""})
        async for i, d in _merged(streams):
            if d.finish_reason == "error":
                yield sse_error(500, f"generation failed: {streams[i].request.result().error}")
                return
            delta = {}
            if d.reasoning and show_reasoning:
                delta.update(reasoning_fields(d.reasoning))
            if d.text:
                delta["content"] = d.text
            lp = _chat_logprobs(backend, d.logprobs) if body.logprobs and d.logprobs else None
            if delta or lp:
                yield chunk(i, delta, None, lp)
            if d.finish_reason is not None:
                yield chunk(i, {}, d.finish_reason)
        if include_usage:
            results = [s.request.result() for s in streams]
            yield _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": backend.name,
                        "choices": [], "usage": _usage(len(ids), results)})
        yield "data: [DONE]\n\n"

    return _stream_response(request, streams, events)


# ---- completions --------------------------------------------------------------------------------------
def _completion_logprobs(backend: Backend, ids: list[int], lps: list[TokenLogprob | None], offset0: int = 0) -> dict:
    strs = [backend.token_strs[i] if i < len(backend.token_strs) else "" for i in ids]
    offsets, pos = [], offset0
    for s in strs:
        offsets.append(pos)
        pos += len(s)
    return {"tokens": strs, "token_logprobs": [None if x is None else x.logprob for x in lps],
            "top_logprobs": [None if x is None else {backend.token_strs[i]: v for i, v in x.top} for x in lps],
            "text_offset": offsets}


async def completions(backend: Backend, body: CompletionRequest, request: Request):
    _check_common(backend, body)
    cfg = backend.config
    prompts = body.prompts()
    if len(prompts) > cfg.max_prompts:
        raise APIError(400, f"at most {cfg.max_prompts} prompts per request, got {len(prompts)}", "prompt", LIMIT)
    check_prompt_size(backend, [p for p in prompts if isinstance(p, str)], "prompt")
    encoded = []
    for p in prompts:
        ids = await run_in_threadpool(backend.encode, p) if isinstance(p, str) else list(p)
        if not ids:
            raise APIError(400, "prompt must not be empty", "prompt")
        backend.check_ids(ids, "prompt")
        encoded.append(ids)
    jobs = []
    for ids in encoded:
        max_tokens = _max_tokens(backend, body.max_tokens, len(ids), cfg.default_max_tokens, "prompt")
        for i in range(body.n):
            jobs.append((ids, _params(body, max_tokens, i, logprobs=body.logprobs,
                                      prompt_logprobs=body.logprobs if body.echo and body.logprobs is not None
                                      else None)))
    streams = _submit(backend, jobs)
    prompt_texts = [p if isinstance(p, str) else await run_in_threadpool(backend.decode, p) for p in prompts]
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    prompt_tokens = sum(len(ids) for ids in encoded)

    if not body.stream:
        results = await _results(request, streams)
        choices = []
        for k, r in enumerate(results):
            ids = encoded[k // body.n]
            text = (prompt_texts[k // body.n] if body.echo else "") + r.text
            logprobs = None
            if body.logprobs is not None:
                if body.echo:
                    logprobs = _completion_logprobs(backend, ids + r.token_ids, [None, *r.prompt_logprobs, *r.logprobs])
                else:
                    logprobs = _completion_logprobs(backend, r.token_ids, r.logprobs)
            choices.append({"index": k, "text": text, "logprobs": logprobs, "finish_reason": r.finish_reason,
                            "stop_reason": r.stop_reason})
        usage = _usage(prompt_tokens, results)
        return JSONResponse({"id": rid, "object": "text_completion", "created": created, "model": backend.name,
                             "choices": choices, "usage": usage})

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(k: int, text: str, finish: str | None = None, logprobs=None) -> str:
        return _sse({"id": rid, "object": "text_completion", "created": created, "model": backend.name,
                     "choices": [{"index": k, "text": text, "logprobs": logprobs, "finish_reason": finish}],
                     **({"usage": None} if include_usage else {})})

    async def events():
        if body.echo:
            for k in range(len(streams)):
                yield chunk(k, prompt_texts[k // body.n])
        async for k, d in _merged(streams):
            if d.finish_reason == "error":
                yield sse_error(500, f"generation failed: {streams[k].request.result().error}")
                return
            lp = (_completion_logprobs(backend, d.token_ids, d.logprobs)
                  if body.logprobs is not None and d.logprobs else None)
            if d.text or lp:
                yield chunk(k, d.text, None, lp)
            if d.finish_reason is not None:
                yield chunk(k, "", d.finish_reason)
        if include_usage:
            results = [s.request.result() for s in streams]
            yield _sse({"id": rid, "object": "text_completion", "created": created, "model": backend.name,
                        "choices": [], "usage": _usage(prompt_tokens, results)})
        yield "data: [DONE]\n\n"

    return _stream_response(request, streams, events)
