"""`POST /v1/responses` (OpenAI's Responses API), served by the chat endpoint and translated both ways.

The request becomes a chat request: `instructions` a system turn, `input` text a user turn, input items turns
(`function_call` items assistant tool calls, `function_call_output` tool turns, a `reasoning` item's summary the
next assistant turn's reasoning), `text.format` the `response_format`, `reasoning.effort` the
`reasoning_effort`, `max_output_tokens` the `max_tokens`. Its validation, tool grammar, thinking split and
limits are the chat endpoint's, so both answer alike. The answer becomes output items: a `reasoning` item whose
summary is the thinking span, a `message` with `output_text`, and `function_call` items. With `stream: true`
the chat stream is re-cut into the Responses events: `response.created`, `response.in_progress`, per item
`response.output_item.added` ... `response.output_item.done` (with `response.reasoning_summary_text.delta`,
`response.output_text.delta` or `response.function_call_arguments.delta` between), `response.completed`.
Nothing is stored (`store` true, `previous_response_id` and the other parameters of `protocol.
RESPONSES_NOT_SUPPORTED` are a 400 naming them).
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from hytron.serve import openai
from hytron.serve.backend import Backend
from hytron.serve.errors import APIError
from hytron.serve.protocol import ChatCompletionRequest, ResponsesRequest


def chat_request(body: ResponsesRequest) -> ChatCompletionRequest:
    """The chat request that answers `body`."""
    messages: list[dict] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    reasoning = None
    for item in [body.input] if isinstance(body.input, str) else body.input:
        if isinstance(item, str):
            messages.append({"role": "user", "content": item})
        elif item.type == "message":
            messages.append({"role": item.role, "content": item.text(),
                             **({"reasoning": reasoning} if reasoning and item.role == "assistant" else {})})
            reasoning = None if item.role == "assistant" else reasoning
        elif item.type == "reasoning":
            reasoning = item.text()
        elif item.type == "function_call":
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and last.get("tool_calls") is not None and not last["content"]:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call],
                                 **({"reasoning": reasoning} if reasoning else {})})
                reasoning = None
        else:  # function_call_output
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    if reasoning is not None:  # a reasoning item no assistant turn followed: an assistant turn of its own
        messages.append({"role": "assistant", "content": "", "reasoning": reasoning})
    chat: dict = {"model": body.model, "messages": messages, "stream": body.stream,
                  "parallel_tool_calls": body.parallel_tool_calls}
    if body.stream:
        chat["stream_options"] = {"include_usage": True}
    for name, value in (("max_tokens", body.max_output_tokens), ("temperature", body.temperature),
                        ("top_p", body.top_p), ("user", body.user)):
        if value is not None:
            chat[name] = value
    if body.tools:
        chat["tools"] = [{"type": "function", "function": t.model_dump(exclude_none=True, exclude={"type"})}
                         for t in body.tools]
    if body.tool_choice is not None:
        chat["tool_choice"] = body.tool_choice if isinstance(body.tool_choice, str) else {
            "type": "function", "function": {"name": body.tool_choice.name}}
    if body.reasoning and body.reasoning.effort:
        chat["reasoning_effort"] = body.reasoning.effort
    fmt = body.text.format if body.text else None
    if fmt is not None and fmt.type != "text":
        chat["response_format"] = {"type": fmt.type} if fmt.type == "json_object" else {
            "type": "json_schema", "json_schema": {"name": fmt.name or "output", "schema": fmt.schema_,
                                                   **({"strict": fmt.strict} if fmt.strict is not None else {})}}
    try:
        return ChatCompletionRequest.model_validate(chat)
    except Exception as e:  # noqa: BLE001 (a pydantic ValidationError: the translated request is wrong)
        errors = getattr(e, "errors", lambda: [])()
        where = ".".join(str(x) for x in errors[0]["loc"]) if errors else "input"
        raise APIError(400, f"input: {errors[0]['msg'] if errors else e} (at {where})", "input") from None


class _Response:
    """The Responses object being built (ids, echoed parameters, output items, usage)."""

    def __init__(self, backend: Backend, body: ResponsesRequest):
        self.id, self.created = f"resp_{uuid.uuid4().hex}", int(time.time())
        self.body, self.name = body, backend.name
        self.output: list[dict] = []

    def object(self, status: str, usage: dict | None = None, incomplete: str | None = None) -> dict:
        b = self.body
        fmt = b.text.format.model_dump(by_alias=True, exclude_none=True) if b.text and b.text.format else {
            "type": "text"}
        return {"id": self.id, "object": "response", "created_at": self.created, "status": status,
                "error": None, "incomplete_details": {"reason": incomplete} if incomplete else None,
                "instructions": b.instructions, "max_output_tokens": b.max_output_tokens, "model": self.name,
                "output": self.output, "parallel_tool_calls": b.parallel_tool_calls,
                "previous_response_id": None, "reasoning": b.reasoning.model_dump() if b.reasoning else None,
                "store": False, "temperature": b.temperature, "text": {"format": fmt},
                "tool_choice": (b.tool_choice if isinstance(b.tool_choice, str) or b.tool_choice is None
                                else b.tool_choice.model_dump()) or "auto",
                "tools": [t.model_dump(exclude_none=True) for t in b.tools or []], "top_p": b.top_p,
                "truncation": "disabled", "usage": usage, "user": b.user, "metadata": b.metadata or {}}


def _usage(chat_usage: dict) -> dict:
    return {"input_tokens": chat_usage["prompt_tokens"], "input_tokens_details": chat_usage["prompt_tokens_details"],
            "output_tokens": chat_usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": chat_usage["completion_tokens_details"]["reasoning_tokens"]},
            "total_tokens": chat_usage["total_tokens"]}


def _reasoning_item(text: str) -> dict:
    return {"type": "reasoning", "id": f"rs_{uuid.uuid4().hex}", "summary": [{"type": "summary_text", "text": text}]}


def _message_item(text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def _status(finish: str | None) -> tuple[str, str | None]:
    return ("incomplete", "max_output_tokens") if finish == "length" else ("completed", None)


async def responses(backend: Backend, body: ResponsesRequest, request: Request):
    chat = chat_request(body)
    resp = _Response(backend, body)
    answer = await openai.chat_completions(backend, chat, request)
    if not body.stream:
        out = json.loads(answer.body)
        choice = out["choices"][0]
        msg = choice["message"]
        if msg.get("reasoning"):
            resp.output.append(_reasoning_item(msg["reasoning"]))
        if msg.get("content") or not msg.get("tool_calls"):
            resp.output.append(_message_item(msg.get("content") or ""))
        for c in msg.get("tool_calls") or []:
            resp.output.append(_call_item(c["id"], c["function"]["name"], c["function"]["arguments"]))
        status, why = _status(choice["finish_reason"])
        return JSONResponse(resp.object(status, _usage(out["usage"]), why))
    return StreamingResponse(_events(resp, answer), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(resp: _Response, answer: StreamingResponse):
    """The chat stream's chunks, re-cut into Responses events."""
    seq = 0

    def event(kind: str, **fields) -> str:
        nonlocal seq
        seq += 1
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq - 1, **fields})}\n\n"

    yield event("response.created", response=resp.object("in_progress"))
    yield event("response.in_progress", response=resp.object("in_progress"))
    open_item: dict | None = None  # the item being streamed: reasoning, message or function_call
    calls: dict[int, dict] = {}  # tool-call index -> its item
    finish, usage = None, None

    def close():
        """Events that finish the open item."""
        item, index = open_item, len(resp.output) - 1
        if item["type"] == "reasoning":
            text = item["summary"][0]["text"]
            yield event("response.reasoning_summary_text.done", item_id=item["id"], output_index=index,
                        summary_index=0, text=text)
            yield event("response.reasoning_summary_part.done", item_id=item["id"], output_index=index,
                        summary_index=0, part={"type": "summary_text", "text": text})
        elif item["type"] == "message":
            part = item["content"][0]
            yield event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                        text=part["text"], logprobs=[])
            yield event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                        part=part)
        else:
            yield event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                        arguments=item["arguments"])
        if item.pop("status", None) is not None and item["type"] != "reasoning":
            item["status"] = "completed"
        yield event("response.output_item.done", output_index=index, item=item)

    def start(item: dict):
        resp.output.append(item)
        index = len(resp.output) - 1
        yield event("response.output_item.added", output_index=index, item={**item, **(
            {"summary": []} if item["type"] == "reasoning" else {"content": []} if item["type"] == "message" else {})})
        if item["type"] == "reasoning":
            yield event("response.reasoning_summary_part.added", item_id=item["id"], output_index=index,
                        summary_index=0, part={"type": "summary_text", "text": ""})
        elif item["type"] == "message":
            yield event("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})

    async for raw in answer.body_iterator:
        for line in (raw if isinstance(raw, str) else raw.decode()).splitlines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                yield event("error", code=str(chunk["error"].get("code")), message=chunk["error"]["message"],
                            param=chunk["error"].get("param"))
                return
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                d = choice["delta"]
                if d.get("reasoning"):
                    if open_item is None or open_item["type"] != "reasoning":
                        if open_item is not None:
                            for e in close():
                                yield e
                        open_item = {**_reasoning_item(""), "status": "in_progress"}
                        for e in start(open_item):
                            yield e
                    open_item["summary"][0]["text"] += d["reasoning"]
                    yield event("response.reasoning_summary_text.delta", item_id=open_item["id"],
                                output_index=len(resp.output) - 1, summary_index=0, delta=d["reasoning"])
                if d.get("content"):
                    if open_item is None or open_item["type"] != "message":
                        if open_item is not None:
                            for e in close():
                                yield e
                        open_item = _message_item("", "in_progress")
                        for e in start(open_item):
                            yield e
                    open_item["content"][0]["text"] += d["content"]
                    yield event("response.output_text.delta", item_id=open_item["id"],
                                output_index=len(resp.output) - 1, content_index=0, delta=d["content"], logprobs=[])
                for tc in d.get("tool_calls") or []:
                    if tc["index"] not in calls:
                        if open_item is not None:
                            for e in close():
                                yield e
                        open_item = calls[tc["index"]] = _call_item(tc["id"], tc["function"]["name"], "",
                                                                    "in_progress")
                        for e in start(open_item):
                            yield e
                    piece = tc["function"].get("arguments") or ""
                    if piece:
                        calls[tc["index"]]["arguments"] += piece
                        yield event("response.function_call_arguments.delta", item_id=calls[tc["index"]]["id"],
                                    output_index=len(resp.output) - 1, delta=piece)
                finish = choice.get("finish_reason") or finish
    if open_item is None:  # nothing was said: an empty message, as the plain response has
        open_item = _message_item("", "in_progress")
        for e in start(open_item):
            yield e
    for e in close():
        yield e
    status, why = _status(finish)
    final = resp.object(status, _usage(usage) if usage else None, why)
    yield event(f"response.{status}", response=final)
