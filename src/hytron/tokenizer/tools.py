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


def tool_call_stream(parser, tools: list[dict] | None = None, max_calls: int | None = None):
    """The streaming parser for `parser`'s format: `push(text)` returns (content safe to send now, tool-call
    deltas in OpenAI's streaming shape); `finish()` returns (content left, deltas left, number of calls).

    Calls stream as they decode, in both formats: a call's first delta carries its index, id, type and name with
    empty arguments, later ones append to `function.arguments`, and the pieces join into exactly the `arguments`
    of the whole-text parse. Text from a call marker on (or a partial marker at the end) is held; a call that
    turns out malformed before any delta of it was sent comes back as content, and one cut off after its first
    delta stays a call (its pieces were sent; vLLM does the same). `max_calls` (1 for `parallel_tool_calls:
    false`) stops after that many calls."""
    return (JsonCallStream if isinstance(parser, JsonToolParser) else XmlCallStream)(parser, tools, max_calls)


def _after_call(stream, more: bool, then: str) -> str:
    """A call stream's state after a call ended: `then` when another may follow (the text goes on and `max_calls`
    allows one more), else "done"."""
    return then if more and not (stream.max_calls and stream.calls >= stream.max_calls) else "done"


class XmlCallStream:
    """Nemotron 3 XML calls streamed: string values as they come (JSON-escaped), other types when their
    parameter closes (`tool_call_stream`)."""

    _function = re.compile(r"\s*<function=([^>\n]+)>(\n?)")
    _parameter = re.compile(r"\s*<parameter=([^>\n]+)>(\n?)")
    _end_function = re.compile(r"\s*</function>")
    _end_call = re.compile(r"\s*</tool_call>")
    _TYPED = {"integer", "number", "boolean", "object", "array", "null"}

    def __init__(self, parser, tools: list[dict] | None = None, max_calls: int | None = None):
        self.parser, self.tools, self.max_calls = parser, tools, max_calls
        self.types = _param_types(tools)
        self.held = ""
        self.state = "content"  # content | call | body | string | value | end | between | done
        self.calls = 0  # calls begun
        self.raw = ""  # the text of the current call so far (content again if it breaks before its first delta)
        self.first_param = True
        self.name = self.param = None  # the current call's function and parameter type

    def push(self, text: str) -> tuple[str, list[dict]]:
        self.held += text
        return self._run(final=False)

    def finish(self) -> tuple[str, list[dict], int]:
        content, deltas = self._run(final=True)
        if self.state == "done":  # after the calls (or a call broken off by stray text): nothing more is sent
            self.held = ""
        if self.state in ("content", "between", "done"):
            rest, self.held = self.held, ""
            return content + rest, deltas, self.calls
        self.held = ""  # cut inside a call (max_tokens, a stop): its pieces so far were sent, the rest is markup
        return content, deltas, self.calls

    def _delta(self, arguments: str) -> dict:
        return {"index": self.calls - 1, "function": {"arguments": arguments}}

    def _run(self, final: bool) -> tuple[str, list[dict]]:
        out, deltas = [], []
        while True:
            before = (self.state, len(self.held))
            if self.state == "content":
                text, self.held, found = _content_until(self.held, self.parser.start, final)
                out.append(text)
                if not found:
                    break
                self.raw, self.held = self.parser.start, self.held[len(self.parser.start):]
                self.state = "call"
            elif self.state == "call":
                m = self._match(self._function, final)
                if m is None:
                    break
                if m is False:
                    out.append(self.raw + self.held)  # not a call after all: the model's text
                    self.held, self.state = "", "content"
                    continue
                self.calls += 1
                call = ToolCall(m.group(1).strip(), "")
                self.name = call.name
                deltas.append({"index": self.calls - 1, "id": call.id, "type": "function",
                               "function": {"name": call.name, "arguments": ""}})
                self.state, self.first_param = "body", True
            elif self.state == "body":
                m = self._match(self._parameter, final)
                if m is False:
                    m = self._match(self._end_function, final)
                    if m:
                        deltas.append(self._delta("{}" if self.first_param else "}"))
                        self.state = "end"
                        continue
                if not m:
                    if m is False:
                        self.state = "done"  # stray text inside the call: the call ends here
                    break
                name = m.group(1).strip()
                self.param = self.types.get(self.name, {}).get(name)
                deltas.append(self._delta(("{" if self.first_param else ", ") + json.dumps(name, ensure_ascii=False)
                                          + ": " + ("" if self.param in self._TYPED else '"')))
                self.first_param = False
                self.state = "value" if self.param in self._TYPED else "string"
            elif self.state in ("string", "value"):
                at = self.held.find("</parameter>")
                if at < 0:
                    if self.state == "string":
                        keep = 0 if final else _partial_suffix(self.held, "\n</parameter>")
                        piece, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
                        if piece:
                            deltas.append(self._delta(json.dumps(piece, ensure_ascii=False)[1:-1]))
                    break
                value, self.held = self.held[:at], self.held[at + len("</parameter>"):]
                value = value[:-1] if value.endswith("\n") else value
                if self.state == "string":
                    deltas.append(self._delta(json.dumps(value, ensure_ascii=False)[1:-1] + '"'))
                else:
                    deltas.append(self._delta(json.dumps(_convert(value, self.param), ensure_ascii=False)))
                self.state = "body"
            elif self.state == "end":
                m = self._match(self._end_call, final)
                if m is None:
                    break
                self.state = _after_call(self, bool(m), "between")
            elif self.state == "between":
                stripped = self.held.lstrip()
                if not stripped:
                    break
                if stripped.startswith(self.parser.start):
                    self.held = stripped[len(self.parser.start):]
                    self.raw, self.state = self.parser.start, "call"
                elif self.parser.start.startswith(stripped) and not final:
                    break
                else:
                    self.state = "done"
            else:  # done: whatever follows the calls is dropped from the stream
                self.held = ""
                break
            if (self.state, len(self.held)) == before:
                break
        return "".join(out), deltas

    def _match(self, pattern: re.Pattern, final: bool):
        """The match of `pattern` at the start of the held text (consumed; a match that needs one more character
        to see an optional newline waits), None to wait for more text, False when it cannot match."""
        m = pattern.match(self.held)
        if m is not None and (m.lastindex is None or m.group(m.lastindex) or m.end() < len(self.held) or final):
            self.held = self.held[m.end():]
            return m
        if m is not None or (not final and _could_start(self.held, pattern)):
            return None
        return False


class JsonCallStream:
    """Nemotron Nano 2 `<TOOLCALL>[{"name": ..., "arguments": {...}}, ...]</TOOLCALL>` calls streamed: the name
    once it is read, then each top-level argument once its value is complete, written as `json.dumps` writes the
    whole object (so the pieces join into the whole-text parse's `arguments`). A call whose keys come in another
    order, or whose arguments are a JSON string, is held to the end and parsed whole (`tool_call_stream`)."""

    _literal = re.compile(r"-?[0-9][0-9.eE+-]*|true|false|null")

    def __init__(self, parser, tools: list[dict] | None = None, max_calls: int | None = None):
        self.parser, self.tools, self.max_calls = parser, tools, max_calls
        self.held, self.pos = "", 0  # text from the call marker on, and how far of it is read
        self.state = "content"  # content open item args args_sep item_end after_item close between done
        self.calls, self.sent, self.whole = 0, 0, False  # calls begun, of them with a delta sent; held to the end
        self.first = True  # no argument of the current call sent yet
        self.scan = None  # (start, position, depth, in a string, after a backslash) of a value not yet complete

    def push(self, text: str) -> tuple[str, list[dict]]:
        self.held += text
        return self._run(final=False)

    def finish(self) -> tuple[str, list[dict], int]:
        content, deltas = self._run(final=True)
        rest, self.held = self.held, ""
        if self.whole:  # held to the end: parsed whole, content again if it does not parse
            calls = self.parser.parse_calls(rest, self.tools)
            if calls is None:
                return content + rest, deltas, 0
            calls = calls[:self.max_calls] if self.max_calls else calls
            return content, [c.to_openai(k) for k, c in enumerate(calls)], len(calls)
        if self.state in ("content", "between") or (self.state != "done" and not self.sent):
            return content + rest, deltas, self.calls if self.sent else 0
        return content, deltas, self.calls  # after the calls, or cut inside one whose pieces were sent

    def _token(self, final: bool):
        """The next JSON token from `pos`: (kind, raw text, start, end), None to wait for more text, False if no
        token fits (or the text ended, when `final`)."""
        text, i = self.held, self.pos
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return None if not final else False
        c = text[i]
        if c in "[]{},:":
            return c, c, i, i + 1
        if c == '"':
            j = _string_end(text, i)
            return ("str", text[i:j], i, j) if j else (None if not final else False)
        m = self._literal.match(text, i)
        if m is None:
            return False
        if m.end() == len(text) and not final:
            return None  # a number may go on
        return "lit", m.group(), i, m.end()

    def _expect(self, kinds: str, final: bool):
        """The next token if it is one of `kinds` (consumed), None to wait, False otherwise."""
        tok = self._token(final)
        if not tok:
            return tok
        if tok[0] not in kinds.split():
            return False
        self.pos = tok[3]
        return tok

    def _value(self, final: bool):
        """A whole JSON value from `pos` (consumed): its Python value, None to wait, False if it is not one.

        A string, object or array is scanned once: where the scan of an unfinished one stopped is kept
        (`self.scan`), so a long argument streamed token by token costs linear time, not a rescan per token."""
        text, i = self.held, self.pos
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text) or text[i] not in '{["':
            tok = self._token(final)
            if not tok or tok[0] != "lit":
                return tok and False
            start, end = tok[2], tok[3]
        else:
            start = i
            j, depth, in_str, esc = self.scan[1:] if self.scan and self.scan[0] == i else (i, 0, False, False)
            end = 0
            while j < len(text):
                c = text[j]
                j += 1
                if in_str:
                    if esc:
                        esc = False
                    elif c == "\\":
                        esc = True
                    elif c == '"':
                        in_str = False
                        if depth == 0:
                            end = j
                            break
                elif c == '"':
                    in_str = True
                elif c in "[{":
                    depth += 1
                elif c in "]}":
                    depth -= 1
                    if depth == 0:
                        end = j
                        break
            if not end:
                self.scan = (start, j, depth, in_str, esc)
                return None if not final else False
            self.scan = None
        try:
            value = json.loads(self.held[start:end])
        except json.JSONDecodeError:
            return False
        self.pos = end
        return (value,)

    def _item_head(self, final: bool):
        """`{"name": NAME, "arguments": {` from `pos`: the name (consumed), None to wait, False if not this shape."""
        saved, raw = self.pos, []
        for kinds in ("{", "str", ":", "str", ",", "str", ":", "{"):
            tok = self._expect(kinds, final)
            if not tok:
                self.pos = saved
                return tok
            raw.append(tok[1])
        name = json.loads(raw[3])
        if json.loads(raw[1]) != "name" or json.loads(raw[5]) not in ("arguments", "parameters"):
            self.pos = saved
            return False
        return name

    def _run(self, final: bool) -> tuple[str, list[dict]]:
        out, deltas = [], []
        while True:
            before = (self.state, self.pos, len(self.held))
            if self.state == "content":
                text, self.held, found = _content_until(self.held, self.parser.start, final)
                out.append(text)
                if not found:
                    break
                self.pos, self.state = len(self.parser.start), "open"
            elif self.whole or self.state == "done":
                break
            elif self.state == "open":
                tok = self._expect("[", final)
                if tok is None:
                    break
                self.state = "item" if tok else "done"
                self.whole = not tok and not self.sent
            elif self.state == "item":
                name = self._item_head(final)
                if name is None:
                    break
                if name is False:
                    self.whole, self.state = not self.sent, "done"
                    continue
                self.calls += 1
                self.sent, self.first, self.state = self.sent + 1, True, "args"
                deltas.append(ToolCall(name, "").to_openai(self.calls - 1))
            elif self.state == "args":  # at an argument's key, or the object's end when it has none
                saved = self.pos
                tok = self._expect("str }" if self.first else "str", final)
                colon = tok and tok[0] == "str" and self._expect(":", final)
                got = colon and self._value(final)
                if tok is None or colon is None or got is None:
                    self.pos = saved
                    break
                if tok and tok[0] == "}":
                    deltas.append(self._delta("{}"))
                    self.state = "item_end"
                elif not got:
                    self.state = "done"
                else:
                    key = json.dumps(json.loads(tok[1]), ensure_ascii=False)
                    deltas.append(self._delta(("{" if self.first else ", ") + key + ": "
                                              + json.dumps(got[0], ensure_ascii=False)))
                    self.first, self.state = False, "args_sep"
            elif self.state == "args_sep":
                sep = self._expect(", }", final)
                if sep is None:
                    break
                if sep is False:
                    self.state = "done"
                elif sep[0] == "}":
                    deltas.append(self._delta("}"))
                    self.state = "item_end"
                else:
                    self.state = "args"
            elif self.state == "item_end":
                tok = self._expect("}", final)
                if tok is None:
                    break
                self.state = _after_call(self, bool(tok), "after_item")
            elif self.state == "after_item":
                tok = self._expect(", ]", final)
                if tok is None:
                    break
                self.state = "done" if not tok else ("item" if tok[0] == "," else "close")
            elif self.state == "close":
                rest = self.held[self.pos:].lstrip()
                if rest.startswith(self.parser.end):
                    self.held, self.pos, self.state = rest[len(self.parser.end):], 0, "between"
                elif not final and self.parser.end.startswith(rest):
                    break
                else:
                    self.state = "done"
            elif self.state == "between":
                stripped = self.held.lstrip()
                if not stripped:
                    break
                if stripped.startswith(self.parser.start):
                    self.held, self.pos, self.state = stripped, len(self.parser.start), "open"
                elif self.parser.start.startswith(stripped) and not final:
                    break
                else:
                    self.state = "done"
            if (self.state, self.pos, len(self.held)) == before:
                break
        if self.state == "done" and not self.whole:
            self.held, self.pos = "", 0  # whatever follows the calls is dropped from the stream
        return "".join(out), deltas

    def _delta(self, arguments: str) -> dict:
        return {"index": self.calls - 1, "function": {"arguments": arguments}}


def _string_end(text: str, i: int) -> int:
    """The end (after the closing quote) of the JSON string that opens at `text[i]`, 0 if it is not closed yet."""
    j = i + 1
    while j < len(text) and text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return j + 1 if j < len(text) else 0


def _could_start(text: str, pattern: re.Pattern) -> bool:
    """Whether more text could make `pattern` match at the start of `text` (its literal opening is not ruled
    out yet)."""
    literal = pattern.pattern.removeprefix("\\s*").split("(")[0].replace("\\", "")
    rest = text.lstrip()
    return literal.startswith(rest) or rest.startswith(literal)


def _content_until(held: str, marker: str, final: bool) -> tuple[str, str, bool]:
    """(content to send, text kept from `marker` on, whether the marker was found): without it, a partial marker at
    the end is kept back unless the text is `final`."""
    at = held.find(marker)
    if at >= 0:
        return held[:at], held[at:], True
    keep = 0 if final else _partial_suffix(held, marker)
    return held[:len(held) - keep], held[len(held) - keep:], False


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
