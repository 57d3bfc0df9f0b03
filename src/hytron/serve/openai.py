"""The generation endpoints: `/v1/chat/completions` and `/v1/completions`, plain JSON or SSE streams.

Reasoning is returned apart from the answer in `message.reasoning` (vLLM's name) and `reasoning_content`
(the older DeepSeek/llama.cpp name), and streamed as `delta.reasoning` deltas: when the prompt leaves
`<think>` open, everything before `</think>` is reasoning; with thinking off everything is content (vLLM's
`nemotron_v3` reasoning parser). A client that disconnects cancels its requests in the engine (its slots free
up within one step).

Tools (`tools`, `tool_choice`) are rendered by the model's chat template; calls in the answer are parsed into
`tool_calls` (`hytron.tokenizer.tools`: Nemotron 3 XML or Nano 2 JSON, chosen from the template; hytron's own
template writes the XML). Streamed XML calls arrive as OpenAI's deltas while they decode (a call's name first,
then pieces of its `arguments`); `parallel_tool_calls: false` keeps the first call only. `tool_choice`
"required" or a named function constrains the answer (after any thinking) with a grammar
(`hytron.serve.structured`): one or more calls (one when `parallel_tool_calls` is false), or one call of the
named function, with every argument of its JSON schema's type; a function's `strict: true` holds its schema to
OpenAI's strict-mode rules. "auto" leaves the model free, and a call that does not parse comes back as content.
Assistant `tool_calls` in the history get their `arguments` JSON text decoded into objects before rendering,
as vLLM does, because chat templates iterate over them.

Chat template variables: the server's `default_chat_template_kwargs` (`--default-chat-template-kwargs`), then
`reasoning_effort`, then the request's own `chat_template_kwargs`, each overriding the one before.
`reasoning_effort` maps onto thinking and its budget (`REASONING_EFFORT`): "none" turns thinking off;
"minimal", "low" and "medium" turn it on with a budget of 64, 512 and 2048 thinking tokens; "high" turns it
on with no budget of its own (the server's `--max-thinking-tokens`, if any, applies). A request's
`thinking_token_budget` (or `max_thinking_tokens`) wins over the effort's budget; an effort that contradicts
the request's own `enable_thinking` is a 400.

`response_format` `json_object` / `json_schema` constrains the answer (after any thinking) with a grammar, in
plain and streamed responses alike (`hytron.serve.structured`); a schema that cannot be compiled (or not within
`--grammar-timeout`) is a 400. `strict: true` holds the schema to OpenAI's strict-mode rules (a 400 naming the
place that breaks them); `strict: false` or none still enforces the schema, as vLLM does. The grammar allows only
answers of bounded length, so with enough `max_tokens` every answer ends.

Parameters of OpenAI or vLLM that hytron does not implement (`protocol.NOT_SUPPORTED`) are a 400 naming them
unless sent with their no-op value; fields nobody knows are ignored, as vLLM does.

Sampling follows vLLM: `presence_penalty`, `frequency_penalty` and `repetition_penalty` per request
(`hytron.infer.sampling.apply_penalties`); `skip_special_tokens` (default true) and
`spaces_between_special_tokens` shape the text (`Backend.decoder`). The reasoning split works on token ids and
the tool-call parser is handed its markers whatever `skip_special_tokens` says, so both work either way.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from hytron.infer import Completion, EngineClosed, PromptTooLong, QueueFull, SamplingParams, TokenLogprob
from hytron.serve.backend import RESERVED_TEMPLATE_KWARGS, Backend, Stream
from hytron.serve.errors import APIError, sse_error
from hytron.serve.protocol import ChatCompletionRequest, CompletionRequest, TokenizeRequest, _Sampling
from hytron.serve.structured import StrictSchemaError, strict_problem
from hytron.tokenizer.tools import split_tool_calls, tool_call_stream

LIMIT = "limit_exceeded"  # the code of refusals that depend on the server's settings, not on the schema


def check_model(backend: Backend, model: str | None) -> None:
    if model is not None and model != backend.name:
        raise APIError(404, f"The model `{model}` does not exist. Served: `{backend.name}`.", "model",
                       "model_not_found")


def _check_common(backend: Backend, body: _Sampling) -> None:
    check_model(backend, body.model)
    cfg = backend.config
    if body.n > cfg.max_n:
        raise APIError(400, f"n must be at most {cfg.max_n}, got {body.n}", "n", LIMIT)
    if body.stop_token_ids:
        backend.check_ids(body.stop_token_ids, "stop_token_ids")
    stop_bytes = sum(len(s.encode()) for s in body.stops())
    if stop_bytes > cfg.max_stop_bytes:
        raise APIError(400, f"stop strings must hold at most {cfg.max_stop_bytes} bytes together, got {stop_bytes}",
                       "stop", LIMIT)
    if body.logit_bias:
        backend.check_ids([int(i) for i in body.logit_bias], "logit_bias")


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
            include_stop_str_in_output=body.include_stop_str_in_output,
            logit_bias={int(i): b for i, b in body.logit_bias.items()} if body.logit_bias else None,
            presence_penalty=body.presence_penalty or 0.0, frequency_penalty=body.frequency_penalty or 0.0,
            repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty, **kw)
    except ValueError as e:
        raise APIError(400, str(e)) from None


async def _grammar(backend: Backend, body: _Sampling):
    """A function making one fresh grammar constraint per sequence for `response_format`, or None for text."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    schema = fmt.json_schema.schema_ if fmt.type == "json_schema" else None
    strict = fmt.json_schema.strict if fmt.type == "json_schema" else None

    def make():
        return _constraint(lambda: backend.grammars.constraint(fmt.type, schema, strict), "response_format")

    await run_in_threadpool(make)  # compile now (cached after), off the event loop: a bad schema is a 400
    return make


async def _tool_constraint(backend: Backend, spec: dict):
    """A function making one fresh constraint per sequence for a forced tool call (compiled now: a 400 if not)."""

    def make():
        return _constraint(lambda: backend.grammars.compiled(spec), "tools")

    await run_in_threadpool(make)
    return make


def _constraint(make, param: str):
    try:
        return make()
    except StrictSchemaError as e:  # OpenAI's code for a strict schema it cannot hold to its rules
        raise APIError(400, str(e), param, "invalid_json_schema") from None
    except (ValueError, ImportError) as e:
        raise APIError(400, str(e), param) from None
    except TimeoutError as e:
        raise APIError(429, str(e), code="queue_full", headers={"Retry-After": "1"}) from None


def _submit(backend: Backend, jobs: list[tuple[list[int], SamplingParams]], decode=None,
            grammar=None) -> list[Stream]:
    capacity = backend.engine.max_slots + backend.engine.max_waiting
    if len(jobs) > capacity:  # could never be admitted, so no retry would help: 400, not 429
        raise APIError(400, f"this request needs {len(jobs)} sequences (n x prompts) but the server holds at most "
                       f"{capacity}", "n", LIMIT)
    streams: list[Stream] = []
    try:
        for ids, params in jobs:
            streams.append(backend.submit(ids, params, decode, grammar() if grammar else None))
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


def _usage(prompt_tokens: int, results: list[Completion], n: int) -> dict:
    """Usage of `results`, `n` per prompt; a prompt counts once, with the cached tokens of its first choice (as
    vLLM's prompt_tokens_details)."""
    completion = sum(r.completion_tokens for r in results)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
             "total_tokens": prompt_tokens + completion,
             "completion_tokens_details": {"reasoning_tokens": sum(r.reasoning_tokens for r in results)},
             "prompt_tokens_details": {"cached_tokens": sum(r.cached_tokens for r in results[::n])}}
    drafts = sum(r.drafts for r in results)
    if drafts:  # speculative decoding (--speculative-tokens): hytron's own field
        drafted, accepted = sum(r.draft_tokens for r in results), sum(r.accepted_tokens for r in results)
        usage["speculative"] = {"draft_tokens": drafted, "accepted_tokens": accepted,
                                "acceptance_rate": accepted / drafted, "mean_accepted_length": 1 + accepted / drafts}
    return usage


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


def template_messages(messages) -> list[dict]:
    """API messages -> the dicts a chat template reads (developer -> system, tool-call arguments as objects)."""
    out = []
    for m in messages:
        msg: dict = {"role": "system" if m.role == "developer" else m.role}
        if m.content is not None or not m.tool_calls:
            msg["content"] = m.text()
        if m.role == "assistant" and (m.reasoning_content or m.reasoning):
            msg["reasoning_content"] = m.reasoning_content or m.reasoning
        if m.tool_calls:
            msg["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
                                 for c in m.tool_calls]
        if m.tool_call_id is not None:
            msg["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            msg["name"] = m.name
        out.append(msg)
    return out


def _arguments(text: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, dict) else text


# reasoning_effort (OpenAI's values) -> (thinking on, thinking budget or None for none of its own)
REASONING_EFFORT = {"none": (False, None), "minimal": (True, 64), "low": (True, 512), "medium": (True, 2048),
                    "high": (True, None)}


def _template_kwargs(backend: Backend, body) -> tuple[bool | None, dict, int | None]:
    """(enable_thinking, the other template variables, the reasoning effort's thinking budget) of a request:
    the server's defaults, overridden by `reasoning_effort`, overridden by the request's chat_template_kwargs."""
    own = body.chat_template_kwargs.model_dump(exclude_none=True) if body.chat_template_kwargs else {}
    reserved = sorted(k for k in own if k in RESERVED_TEMPLATE_KWARGS or k.startswith("_"))
    if reserved:
        raise APIError(400, f"chat_template_kwargs: {reserved[0]!r} is set by the request or the template itself, "
                            "not a template variable", "chat_template_kwargs")
    kwargs = {**(backend.config.default_chat_template_kwargs or {}), **own}
    enable = kwargs.pop("enable_thinking", None)
    effort, budget = getattr(body, "reasoning_effort", None), None
    if effort is not None:
        on, budget = REASONING_EFFORT[effort]
        if own.get("enable_thinking", on) != on:
            raise APIError(400, f"reasoning_effort {effort!r} contradicts chat_template_kwargs.enable_thinking="
                                f"{str(own['enable_thinking']).lower()}", "reasoning_effort")
        enable = on
    return enable, kwargs, budget


def tokenize_chat(backend: Backend, body: TokenizeRequest, cancel: threading.Event | None = None) -> list[int]:
    """`/tokenize` with `messages`: the ids a chat request with the same fields would prefill."""
    enable, kwargs, _ = _template_kwargs(backend, body)
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    try:
        return backend.chat_prompt(template_messages(body.messages), enable, tools,
                                   add_generation_prompt=body.add_generation_prompt, cancel=cancel,
                                   template_kwargs=kwargs)[0]
    except ValueError as e:
        raise APIError(400, str(e), "messages") from None


def _chat_prompt(backend: Backend, body: ChatCompletionRequest, cancel: threading.Event | None = None):
    """(ids, thinking, tool parser or None, tools, the forced call's grammar spec or None, the reasoning effort's
    budget) of a chat request."""
    enable, kwargs, effort_budget = _template_kwargs(backend, body)
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    choice = "auto" if body.tool_choice is None else body.tool_choice
    if not tools and choice not in ("none", "auto"):
        raise APIError(400, "tool_choice requires a call but no tools were given", "tool_choice")
    choice = choice if tools else "none"
    parser = backend.tool_parser if choice != "none" else None
    spec = None
    if choice not in ("none", "auto"):
        if parser is None:
            raise APIError(400, "this model's chat template has no tool-call format: tool_choice can only be auto "
                                "or none (or start the server with --tool-parser)", "tool_choice", LIMIT)
        spec = _tool_grammar(body, tools, parser)
    try:
        ids, thinking = backend.chat_prompt(template_messages(body.messages), enable, tools, cancel=cancel,
                                            template_kwargs=kwargs)
    except ValueError as e:
        raise APIError(400, str(e), "messages") from None
    return ids, thinking, parser, tools, spec, effort_budget


def _tool_grammar(body: ChatCompletionRequest, tools: list[dict], parser) -> dict:
    """The grammar spec of a forced call (`hytron.serve.structured.build_grammar`): one call of the named
    function, or one or more calls (one when `parallel_tool_calls` is false) of any, arguments by their schema."""
    if body.response_format is not None and body.response_format.type != "text":
        raise APIError(400, "response_format cannot constrain an answer that tool_choice forces to be a tool call",
                       "response_format")
    for i, t in enumerate(tools):
        f = t["function"]
        if f.get("strict") and f.get("parameters"):  # no (or empty) parameters: a call without arguments
            problem = strict_problem(f["parameters"], f"tools.{i}.function.parameters")
            if problem:
                raise APIError(400, problem, f"tools.{i}.function.parameters", "invalid_function_parameters")
    named = None if isinstance(body.tool_choice, str) else body.tool_choice.function.name
    if named is not None and named not in {t["function"]["name"] for t in tools}:
        raise APIError(400, f"tool_choice names {named!r}, which is not in tools", "tool_choice", "unknown_tool")
    chosen = [{"name": t["function"]["name"],
               "parameters": t["function"].get("parameters") or {"type": "object", "properties": {}}}
              for t in tools if named in (None, t["function"]["name"])]
    return {"tool_calls": {"format": parser.name, "single": named is not None or not body.parallel_tool_calls,
                           "tools": chosen}}


async def chat_completions(backend: Backend, body: ChatCompletionRequest, request: Request):
    _check_common(backend, body)
    cfg = backend.config
    check_prompt_size(backend, [m.text() for m in body.messages if m.role == "user"], "messages")
    # template rendering and tokenizing on the template threads: one big or hostile chat must not stall the
    # event loop or take the threads other requests need; it stops when the client goes away
    ids, thinking, parser, tools, spec, effort_budget = await backend.render(
        functools.partial(_chat_prompt, backend, body), request)
    budget = next((b for b in (body.thinking_token_budget, body.max_thinking_tokens, effort_budget,
                               cfg.max_thinking_tokens) if b is not None), None)
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = _max_tokens(backend, asked, len(ids), cfg.default_max_tokens)
    top = body.top_logprobs or 0
    jobs = [(ids, _params(body, max_tokens, i, logprobs=top if body.logprobs else None, thinking=thinking,
                          max_thinking_tokens=budget if thinking else None)) for i in range(body.n)]
    # the thinking markers never reach the text (reasoning is split on ids); a parser sees its markers
    decode = backend.decoder(body.skip_special_tokens, body.spaces_between_special_tokens,
                             keep=backend.tool_marker_ids if parser else frozenset(), hide=backend.think_ids)
    grammar = await (_tool_constraint(backend, spec) if spec else _grammar(backend, body))
    streams = _submit(backend, jobs, decode, grammar)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    show_reasoning = body.include_reasoning

    def reasoning_fields(text: str | None) -> dict:
        if not show_reasoning:
            return {}
        return {"reasoning": text, **({"reasoning_content": text} if cfg.reasoning_content else {})}

    def message(r: Completion) -> tuple[dict, str]:
        content, calls = (r.text, []) if parser is None else split_tool_calls(parser, r.text, tools)
        calls = calls if body.parallel_tool_calls else calls[:1]
        msg = {"role": "assistant", "content": content, **reasoning_fields(r.reasoning if thinking else None)}
        if calls:
            msg["tool_calls"] = [c.to_openai() for c in calls]
        return msg, ("tool_calls" if calls and r.finish_reason == "stop" else r.finish_reason)

    if not body.stream:
        results = await _results(request, streams)
        choices = []
        for i, r in enumerate(results):
            msg, finish = message(r)
            choices.append({"index": i, "message": msg,
                            "logprobs": _chat_logprobs(backend, r.logprobs) if body.logprobs else None,
                            "finish_reason": finish, "stop_reason": r.stop_reason})
        return JSONResponse({"id": rid, "object": "chat.completion", "created": created, "model": backend.name,
                             "choices": choices, "usage": _usage(len(ids), results, body.n)})

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    extra = {"usage": None} if include_usage else {}

    def chunk(i: int, delta: dict, finish: str | None = None, logprobs=None) -> str:
        return _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": backend.name,
                     "choices": [{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
                     **extra})

    calls_streams = [tool_call_stream(parser, tools, None if body.parallel_tool_calls else 1) if parser else None
                     for _ in range(body.n)]

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
            text, calls = calls_streams[i].push(d.text) if calls_streams[i] and d.text else (d.text, [])
            if text:
                delta["content"] = text
            if calls:
                delta["tool_calls"] = calls
            lp = _chat_logprobs(backend, d.logprobs) if body.logprobs and d.logprobs else None
            if delta or lp:
                yield chunk(i, delta, None, lp)
            if d.finish_reason is not None:
                finish = d.finish_reason
                if calls_streams[i]:
                    rest, calls, n_calls = calls_streams[i].finish()
                    if rest:
                        yield chunk(i, {"content": rest})
                    if calls:
                        yield chunk(i, {"tool_calls": calls})
                    if n_calls:
                        finish = "tool_calls" if finish == "stop" else finish
                yield chunk(i, {}, finish)
        if include_usage:
            results = [s.request.result() for s in streams]
            yield _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": backend.name,
                        "choices": [], "usage": _usage(len(ids), results, body.n)})
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


INLINE_ENCODE_CHARS = 2048  # a text prompt up to this long is tokenized on the event loop (~0.1-0.6 ms)


async def completions(backend: Backend, body: CompletionRequest, request: Request):
    _check_common(backend, body)
    cfg = backend.config
    prompts = body.prompts()
    if len(prompts) > cfg.max_prompts:
        raise APIError(400, f"at most {cfg.max_prompts} prompts per request, got {len(prompts)}", "prompt", LIMIT)
    check_prompt_size(backend, [p for p in prompts if isinstance(p, str)], "prompt")
    encoded = []
    for p in prompts:
        # BOS etc. as the post-processor adds; a long text off the event loop, a short one (well under a
        # millisecond) in it: the hop to a worker thread and back added 2-4 ms before the engine saw the request
        ids = list(p) if not isinstance(p, str) else backend.encode(p) if len(p) <= INLINE_ENCODE_CHARS \
            else await run_in_threadpool(backend.encode, p)
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
    decode = backend.decoder(body.skip_special_tokens, body.spaces_between_special_tokens)
    streams = _submit(backend, jobs, decode, await _grammar(backend, body))
    prompt_texts = [p if isinstance(p, str) else await run_in_threadpool(decode, p) for p in prompts]
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
        usage = _usage(prompt_tokens, results, body.n)
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
                        "choices": [], "usage": _usage(prompt_tokens, results, body.n)})
        yield "data: [DONE]\n\n"

    return _stream_response(request, streams, events)
