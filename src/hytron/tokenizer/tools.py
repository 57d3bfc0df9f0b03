"""Tool calls in model output, in the two Nemotron formats: parsed whole or while streaming; malformed stays text.

- `xml` (Nemotron 3, Qwen3-coder): `<tool_call>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n</function>\\n
  </tool_call>`; parameter values are text, converted to the type the tool's JSON schema declares (integer,
  number, boolean, object, array) as vLLM's `qwen3_coder` parser does.
- `json` (Nemotron Nano 2): `<TOOLCALL>[{"name": ..., "arguments": {...}}, ...]</TOOLCALL>`.

The parser is chosen from the chat template (the markers it writes) unless named. A call that does not parse
is returned as content, never an error: the client sees what the model wrote.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object as text, as the OpenAI API returns it
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self, index: int | None = None) -> dict:
        out = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return out if index is None else {"index": index, **out}


class XmlToolParser:
    """Nemotron 3 / Qwen3-coder XML calls."""

    name = "xml"
    start, end = "<tool_call>", "</tool_call>"
    _call = re.compile(r"<tool_call>\s*<function=([^>\n]+)>\n?(.*?)</function>\s*(?:</tool_call>|$)", re.DOTALL)
    _param = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.DOTALL)

    def opening(self, name: str | None = None) -> str:
        """Text that starts a call (of `name`): prefilled when `tool_choice` requires a call."""
        return "<tool_call>\n<function=" + (f"{name}>\n" if name else "")

    def parse_calls(self, text: str, tools: list[dict] | None = None) -> list[ToolCall] | None:
        """The calls in `text` (which starts at the first call marker), or None if any is malformed."""
        calls, pos = [], 0
        types = _param_types(tools)
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                return calls or None
            m = self._call.match(text, pos)
            if m is None:
                return None
            name, body = m.group(1).strip(), m.group(2)
            args = {}
            for p in self._param.finditer(body):
                args[p.group(1).strip()] = _convert(p.group(2), types.get(name, {}).get(p.group(1).strip()))
            if self._param.sub("", body).strip():  # stray text inside the function block
                return None
            calls.append(ToolCall(name, json.dumps(args, ensure_ascii=False)))
            pos = m.end()


class JsonToolParser:
    """Nemotron Nano 2 `<TOOLCALL>[...]</TOOLCALL>` calls."""

    name = "json"
    start, end = "<TOOLCALL>", "</TOOLCALL>"

    def opening(self, name: str | None = None) -> str:
        return '<TOOLCALL>[{"name": ' + (f'"{name}", "arguments": ' if name else "")

    def parse_calls(self, text: str, tools: list[dict] | None = None) -> list[ToolCall] | None:
        calls = []
        for block in re.split(r"(?=<TOOLCALL>)", text.strip()):
            if not block.strip():
                continue
            body = block.strip().removeprefix(self.start)
            body = body[:body.rindex(self.end)] if self.end in body else body  # the last call may lack its end
            try:
                items = json.loads(body)
            except json.JSONDecodeError:
                return None
            items = items if isinstance(items, list) else [items]
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    return None
                args = item.get("arguments", item.get("parameters", {}))
                if isinstance(args, str):
                    try:
                        args = json.loads(args)
                    except json.JSONDecodeError:
                        return None
                if not isinstance(args, dict):
                    return None
                calls.append(ToolCall(item["name"], json.dumps(args, ensure_ascii=False)))
        return calls or None


PARSERS = {"xml": XmlToolParser, "json": JsonToolParser}


def parser_for(template: str | None, name: str | None = None):
    """The parser named (`xml`, `json`, `none`), else the one whose markers the chat template writes."""
    if name not in (None, "auto"):
        if name == "none":
            return None
        if name not in PARSERS:
            raise ValueError(f"unknown tool parser {name!r}; choose from {sorted(PARSERS)}, auto or none")
        return PARSERS[name]()
    if template and "<tool_call>" in template and "<function=" in template:
        return XmlToolParser()
    if template and "<TOOLCALL>" in template:
        return JsonToolParser()
    return None


def split_tool_calls(parser, text: str, tools: list[dict] | None = None) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a finished answer; a malformed call leaves the whole text as content."""
    at = text.find(parser.start)
    if at < 0:
        return text, []
    calls = parser.parse_calls(text[at:], tools)
    if calls is None:
        return text, []
    content = text[:at].rstrip()
    return (content or None), calls


class ToolCallStream:
    """Streaming: `push(text)` returns the content that is safe to send now; text from the first call marker on
    (or a partial marker at the end) is held, and `finish()` returns (content left, calls)."""

    def __init__(self, parser, tools: list[dict] | None = None, prefix: str = ""):
        self.parser, self.tools = parser, tools
        self.held = prefix  # a prefilled call opening (tool_choice required/named) is part of the call
        self.in_call = bool(prefix)

    def push(self, text: str) -> str:
        self.held += text
        if self.in_call:
            return ""
        at = self.held.find(self.parser.start)
        if at >= 0:
            out, self.held, self.in_call = self.held[:at], self.held[at:], True
            return out
        keep = _partial_suffix(self.held, self.parser.start)
        out, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        held, self.held = self.held, ""
        if not self.in_call:
            return held, []
        calls = self.parser.parse_calls(held, self.tools)
        return (held, []) if calls is None else ("", calls)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def _param_types(tools: list[dict] | None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for t in tools or []:
        f = t.get("function", t) if isinstance(t, dict) else {}
        props = ((f.get("parameters") or {}).get("properties") or {}) if isinstance(f, dict) else {}
        if isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(props, dict):
            out[f["name"]] = {k: v.get("type") for k, v in props.items() if isinstance(v, dict)}
    return out


def _convert(value: str, kind) -> object:
    """A parameter's text as the schema's type; text that does not convert stays text."""
    if kind in ("integer", "number", "boolean", "object", "array", "null"):
        try:
            out = json.loads(value.strip())
        except json.JSONDecodeError:
            return value
        ok = {"integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
              "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
              "boolean": lambda x: isinstance(x, bool), "object": lambda x: isinstance(x, dict),
              "array": lambda x: isinstance(x, list), "null": lambda x: x is None}[kind]
        return out if ok(out) else value
    return value
