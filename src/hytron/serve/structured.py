"""Structured outputs: `response_format` and forced tool calls enforced by grammar-constrained decoding.

xgrammar compiles a grammar (any JSON object, one JSON schema, or the tool-call format of the chat template with
each tool's argument schema) against the served tokenizer and gives each request a matcher; the engine masks the
logits of every answer token with it (`hytron.infer.Engine.submit(constraint=...)`), so the answer has the
shape by construction (unless `max_tokens` cuts it: finish_reason "length"). Thinking is free: the mask applies
from the first answer token, after `</think>`. Picked over llguidance by `bench/bench_grammar.py` on a hytron
4,096-token BPE: 3.7 vs 16 us per token at batch 1, 4.3 vs 13.7 us at batch 16 (one thread, BENCHMARKS.md).

- **strict** (`json_schema.strict`, a function's `strict`): true, the schema must follow OpenAI's strict-mode
  rules (`strict_problem`: an object at the root, `additionalProperties: false` and every property required on
  every object, only the keywords OpenAI lists, at most 10 levels and 5,000 properties), else a 400 naming the
  place; false or absent, the schema is still enforced (as vLLM does: a grammar cannot be "best effort").
- **Termination**: the grammar decodes a subset of the schema that always ends (`terminating`): compact JSON
  (no free whitespace, where random or weak models loop), and every length the schema leaves open is capped
  (strings `MAX_STRING` characters, arrays `MAX_ITEMS` items, integers within int64, extra properties
  `MAX_PROPERTIES`, plain JSON objects `MAX_DEPTH` levels). Every output still validates against the schema as
  given; a schema's own bounds are kept.
- **Bounded compilation**: grammars compile in a separate process (`Compiler`) that is killed after
  `seconds`, so a hostile schema (a huge regex repetition, thousands of alternatives) is a 400 that names the
  parameter and never holds a server thread or the engine; compiled grammars are cached by their spec.
"""

from __future__ import annotations

import collections
import json
import os
import select
import subprocess
import sys
import threading
import time

import torch

MAX_STRING, MAX_ITEMS, MAX_PROPERTIES, MAX_DEPTH = 2048, 256, 64, 6
INT64 = 2**63 - 1

# ---- OpenAI's strict mode --------------------------------------------------------------------------------
# keywords OpenAI's Structured Outputs accept (https://platform.openai.com/docs/guides/structured-outputs,
# "Supported schemas"), plus annotations that change nothing
_STRICT_KEYWORDS = {
    None: {"type", "enum", "const", "anyOf", "$ref", "$defs", "definitions", "title", "description", "default",
           "examples", "$comment", "$schema", "$id", "deprecated", "readOnly", "writeOnly"},
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems"},
    "string": {"pattern", "format"},
    "number": {"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"},
    "integer": {"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"},
    "boolean": set(), "null": set(),
}
_STRICT_FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
STRICT_MAX_DEPTH, STRICT_MAX_PROPERTIES = 10, 5000


class StrictSchemaError(ValueError):
    """A `strict: true` schema that breaks OpenAI's strict-mode rules (the message names the place)."""


def strict_problem(schema, where: str = "schema") -> str | None:
    """Why `schema` breaks OpenAI's strict-mode rules (with the JSON path of the place), or None."""
    if not isinstance(schema, dict) or schema.get("type") != "object" or "anyOf" in schema:
        return f"{where}: the root must be an object schema (type 'object', not anyOf)"
    count = 0
    stack = [(schema, where, 1)]
    while stack:
        s, path, depth = stack.pop()
        if not isinstance(s, dict):
            return f"{path}: must be a schema object"
        if depth > STRICT_MAX_DEPTH:
            return f"{path}: nested deeper than {STRICT_MAX_DEPTH} levels (strict mode's limit)"
        types = s.get("type")
        types = [types] if isinstance(types, str) else types if isinstance(types, list) else []
        allowed = set(_STRICT_KEYWORDS[None]).union(*(_STRICT_KEYWORDS.get(t, set()) for t in types))
        bad = sorted(k for k in s if k not in allowed)
        if bad:
            return f"{path}: {bad[0]!r} is not supported in strict mode" + (
                f" for type {'/'.join(types)}" if types else "")
        if "format" in s and s["format"] not in _STRICT_FORMATS:
            return f"{path}.format: {s['format']!r} is not supported in strict mode"
        if "object" in types:
            props = s.get("properties") or {}
            if s.get("additionalProperties") is not False:
                return f"{path}: additionalProperties must be false in strict mode"
            missing = sorted(set(props) - set(s.get("required") or []))
            if missing:
                return f"{path}: every property must be required in strict mode ({missing[0]!r} is not)"
            count += len(props)
            if count > STRICT_MAX_PROPERTIES:
                return f"{path}: more than {STRICT_MAX_PROPERTIES} properties in all (strict mode's limit)"
            stack += [(v, f"{path}.properties.{k}", depth + 1) for k, v in props.items()]
        if "items" in s:
            stack.append((s["items"], f"{path}.items", depth + 1))
        for i, v in enumerate(s.get("anyOf") or []):
            stack.append((v, f"{path}.anyOf.{i}", depth))
        for key in ("$defs", "definitions"):
            stack += [(v, f"{path}.{key}.{k}", depth) for k, v in (s.get(key) or {}).items()]
    return None


# ---- a subset of a schema that always ends ----------------------------------------------------------------
def terminating(schema):
    """`schema` with every length it leaves open capped (see the module docstring); a new object."""
    if not isinstance(schema, dict):
        return schema
    s = {k: _terminating_child(k, v) for k, v in schema.items()}
    types = s.get("type")
    types = {types} if isinstance(types, str) else set(types) if isinstance(types, list) else set()
    free = not ({"enum", "const", "$ref", "anyOf", "oneOf", "allOf"} & set(s))
    if "string" in types and free and not ({"pattern", "format"} & set(s)):
        s["maxLength"] = min(s.get("maxLength", MAX_STRING), max(MAX_STRING, s.get("minLength", 0)))
    if "array" in types and free:
        s["maxItems"] = min(s.get("maxItems", MAX_ITEMS), max(MAX_ITEMS, s.get("minItems", 0)))
    if "integer" in types and free:
        s.setdefault("minimum", -INT64 - 1)
        s.setdefault("maximum", INT64)
    if "object" in types and free and s.get("additionalProperties", False) is not False:
        s["maxProperties"] = min(s.get("maxProperties", MAX_PROPERTIES), max(MAX_PROPERTIES,
                                                                            s.get("minProperties", 0)))
    return s


def _terminating_child(key: str, value):
    if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict):
        return {k: terminating(v) for k, v in value.items()}
    if key in ("items", "additionalProperties", "not", "contains"):
        return terminating(value)
    if key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
        return [terminating(v) for v in value]
    return value


def any_json(depth: int = MAX_DEPTH) -> dict:
    """A JSON object of bounded size, `depth` levels at most (json_object mode)."""
    leaf = [{"type": "string"}, {"type": "number"}, {"type": "integer"}, {"type": "boolean"}, {"type": "null"}]
    defs = {"v1": {"anyOf": leaf}}
    for k in range(2, depth):
        inner = {"$ref": f"#/$defs/v{k - 1}"}
        defs[f"v{k}"] = {"anyOf": [*leaf, {"type": "array", "items": inner},
                                   {"type": "object", "additionalProperties": inner}]}
    return terminating({"type": "object", "additionalProperties": {"$ref": f"#/$defs/v{depth - 1}"},
                        "$defs": defs})


# ---- grammars ---------------------------------------------------------------------------------------------
def build_grammar(spec: dict):
    """The xgrammar Grammar of a spec: {"json_schema": schema} or {"tool_calls": {...}} (`tool_call_spec`)."""
    import xgrammar as xgr

    if "json_schema" in spec:
        return xgr.Grammar.from_json_schema(json.dumps(spec["json_schema"]), any_whitespace=False)
    calls = spec["tool_calls"]
    if calls["format"] == "json":  # <TOOLCALL>[{"name": ..., "arguments": {...}}, ...]</TOOLCALL>
        one = {"anyOf": [{"type": "object", "properties": {"name": {"const": t["name"]},
                                                            "arguments": terminating(t["parameters"])},
                          "required": ["name", "arguments"], "additionalProperties": False}
                         for t in calls["tools"]]}
        array = {"type": "array", "items": one, "minItems": 1, "maxItems": 1 if calls["single"] else MAX_ITEMS}
        return xgr.Grammar.concat(xgr.Grammar.from_ebnf('root ::= "<TOOLCALL>"'),
                                  xgr.Grammar.from_json_schema(json.dumps(array), any_whitespace=False),
                                  xgr.Grammar.from_ebnf('root ::= "</TOOLCALL>"'))
    # xml: <tool_call>\n<function=NAME>\n<parameter=K>\nVALUE\n</parameter>\n...</function>\n</tool_call>
    alternatives = [_xml_call(t) for t in calls["tools"]]
    call = xgr.Grammar.union(*alternatives) if len(alternatives) > 1 else alternatives[0]
    calls_grammar = call
    for _ in range(0 if calls["single"] else MAX_CALLS - 1):  # call ("\n" call ("\n" call (...)?)?)?
        calls_grammar = xgr.Grammar.concat(call, xgr.Grammar.union(_literal(""), xgr.Grammar.concat(
            _literal("\n"), calls_grammar)))
    return calls_grammar


MAX_CALLS = 8  # parallel tool calls in one constrained answer


def _literal(text: str):
    import xgrammar as xgr

    return xgr.Grammar.from_ebnf(f"root ::= {json.dumps(text, ensure_ascii=False)}" if text else 'root ::= ""')


def _xml_call(tool: dict):
    """One XML call of `tool`: its parameters in schema order (the optional ones may be left out); a string is
    raw text without `<` (an enum one of its values, a pattern its regex), other types JSON text."""
    import xgrammar as xgr

    params = tool["parameters"] or {}
    props = params.get("properties") or {}
    required = set(params.get("required") or [])
    parts = [_literal(f"<tool_call>\n<function={tool['name']}>\n")]
    for name, sub in props.items():
        sub = sub if isinstance(sub, dict) else {}
        kind = sub.get("type")
        if "enum" in sub and all(isinstance(v, str) for v in sub["enum"]) and sub["enum"]:
            value = xgr.Grammar.union(*[_literal(v) for v in sub["enum"]]) if len(sub["enum"]) > 1 \
                else _literal(sub["enum"][0])
        elif isinstance(sub.get("const"), str):
            value = _literal(sub["const"])
        elif kind == "string" and "pattern" in sub:
            value = xgr.Grammar.from_regex(sub["pattern"])
        elif kind in (None, "string") or not isinstance(kind, str):
            lo = sub.get("minLength", 0)
            hi = max(lo, min(sub.get("maxLength", MAX_STRING), MAX_STRING))
            value = xgr.Grammar.from_ebnf(f"root ::= [^<]{{{lo},{hi}}}")
        else:
            value = xgr.Grammar.from_json_schema(json.dumps(terminating(sub)), any_whitespace=False)
        param = xgr.Grammar.concat(_literal(f"<parameter={name}>\n"), value, _literal("\n</parameter>\n"))
        parts.append(param if name in required else xgr.Grammar.union(param, _literal("")))
    parts.append(_literal("</function>\n</tool_call>"))
    return xgr.Grammar.concat(*parts)


class JSONConstraint:
    """One request's grammar state: `mask(logits)` leaves only the tokens the grammar allows next (only the stop
    ids once the answer is complete), `accept(token)` advances it."""

    def __init__(self, compiled, vocab_size: int):
        import xgrammar as xgr

        self._xgr = xgr
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)  # (1, ceil(V / 32)) int32

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (V,) -> a copy with the disallowed tokens at -inf."""
        self.matcher.fill_next_token_bitmask(self.bitmask)
        out = logits.clone()[None]
        self._xgr.apply_token_bitmask_inplace(out, self.bitmask)
        return out[0]

    def accept(self, token_id: int) -> None:
        self.matcher.accept_token(int(token_id))


# ---- compilation in a process of its own -----------------------------------------------------------------
def _compilers(vocab: list[str], vocab_type: str, vocab_size: int, stop_ids: list[int], prefix_space: bool,
               control: list[int]) -> dict:
    """xgrammar compilers by vocabulary: "text" (every token), "json" (no token with a control character: JSON
    text has none outside strings, where they must be escaped, and xgrammar's length-bounded strings let raw ones
    through, measured with xgrammar 0.2.9)."""
    import xgrammar as xgr

    out = {}
    for name, blank in (("text", set()), ("json", set(control))):
        words = ["" if i in blank else w for i, w in enumerate(vocab)]
        info = xgr.TokenizerInfo(words, getattr(xgr.VocabType, vocab_type), vocab_size=vocab_size,
                                 stop_token_ids=stop_ids, add_prefix_space=prefix_space)
        out[name] = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    return out


def _vocab_of(spec: dict) -> str:
    """XML tool calls write newlines; JSON (a schema, Nano 2's calls) is compact and has none."""
    return "text" if spec.get("tool_calls", {}).get("format") == "xml" else "json"


def _worker_main() -> None:  # pragma: no cover (runs in the child process)
    """Reads the tokenizer, then grammar specs, one JSON line each, from stdin; answers one JSON line each."""

    compilers = _compilers(*json.loads(sys.stdin.readline()))
    out = sys.stdout
    out.write('["ready", null]\n')
    out.flush()
    for line in sys.stdin:
        try:
            spec = json.loads(line)
            answer = ["ok", compilers[_vocab_of(spec)].compile_grammar(build_grammar(spec)).memory_size_bytes]
        except Exception as e:  # noqa: BLE001 (any failure is the schema's problem, said in the 400)
            answer = ["error", str(e).strip().split("\n")[-1].split(": ", 1)[-1].strip() or type(e).__name__]
        out.write(json.dumps(answer) + "\n")
        out.flush()


class _Worker:
    """A compiler process and its pipes (a line of JSON each way)."""

    def __init__(self, tokenizer_args: tuple, start_seconds: float = 120.0):
        code = "from hytron.serve.structured import _worker_main; _worker_main()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self._buf = b""
        self.send(list(tokenizer_args))
        if self.recv(start_seconds) != ["ready", None]:
            self.kill()
            raise RuntimeError("the grammar compiler process did not start")

    def send(self, obj) -> None:
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()

    def recv(self, seconds: float):
        """The next answer, or None when none came within `seconds` (or the process died)."""
        deadline = time.monotonic() + seconds
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            data = os.read(fd, 1 << 20)
            if not data:
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


class Compiler:
    """Compiles grammar specs here once a worker process compiled the same spec within `seconds` and
    `max_bytes` (else the worker is killed and the spec refused with ValueError); LRU cache by spec.

    The compiled grammar itself cannot come back from the worker: its serialization is ~100x its size (60 MB
    for a 0.5 MB grammar, 3 s to write), so the worker vets and this process compiles again (milliseconds for
    what passes)."""

    def __init__(self, tokenizer_args: tuple, seconds: float, workers: int = 1, cache: int = 64,
                 max_bytes: int = 256 << 20):
        self.args, self.seconds, self.limit, self.max_bytes = tokenizer_args, seconds, cache, max_bytes
        self._free = threading.Semaphore(workers)
        self._idle: list[_Worker] = []
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._compilers = None

    def _local(self, vocab: str):
        with self._lock:
            if self._compilers is None:
                self._compilers = _compilers(*self.args)
            return self._compilers[vocab]

    def compile(self, spec: dict):
        key = json.dumps(spec, sort_keys=True)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if not self._free.acquire(timeout=self.seconds):
            raise TimeoutError("server busy: every grammar compiler is working")
        try:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            worker = worker or _Worker(self.args)
            worker.send(spec)
            answer = worker.recv(self.seconds)
            if answer is None:
                worker.kill()
                raise ValueError(f"took longer than {self.seconds:g} s to compile (the server's limit)")
            with self._lock:
                self._idle.append(worker)
        finally:
            self._free.release()
        status, payload = answer
        if status != "ok":
            raise ValueError(payload)
        if payload > self.max_bytes:
            raise ValueError(f"the compiled grammar takes {payload >> 20} MiB (the server's limit: "
                             f"{self.max_bytes >> 20} MiB)")
        compiled = self._local(_vocab_of(spec)).compile_grammar(build_grammar(spec))
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self.limit:
                self._cache.popitem(last=False)
        return compiled

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


class Grammars:
    """The served tokenizer's grammar compiler (started on first use) and the constraints of requests."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids, seconds: float = 10.0, keep: frozenset = frozenset()):
        self.tokenizer, self.vocab_size, self.stop_ids = tokenizer, vocab_size, list(stop_ids)
        self.seconds, self.keep = seconds, keep
        self._compiler: Compiler | None = None
        self._lock = threading.Lock()

    @property
    def compiler(self) -> Compiler:
        with self._lock:
            if self._compiler is None:
                self._compiler = Compiler(self._tokenizer_args(), self.seconds)
            return self._compiler

    def _tokenizer_args(self) -> tuple:
        try:
            import xgrammar  # noqa: F401
        except ImportError as e:
            raise ImportError("structured outputs need xgrammar: pip install 'hytron[serve]'") from e
        tok = self.tokenizer
        special = tok.special_ids - self.keep
        # special tokens as empty strings: xgrammar never allows them (a control token inside a JSON string would
        # leave the text when special tokens are skipped); the tool-call markers a grammar writes stay
        vocab = ["" if i in special else tok.id_to_token(i) or "" for i in range(tok.vocab_size)]
        decoder = json.dumps(json.loads(tok.backend_json()).get("decoder"))
        if '"ByteLevel"' in decoder:
            vocab_type, prefix_space = "BYTE_LEVEL", False
        elif '"ByteFallback"' in decoder:
            vocab_type, prefix_space = "BYTE_FALLBACK", '"Metaspace"' in decoder
        else:
            vocab_type, prefix_space = "RAW", False
        control = [i for i in range(tok.vocab_size) if any(ord(c) < 32 for c in tok.decode([i]))]
        return vocab, vocab_type, self.vocab_size, self.stop_ids, prefix_space, control

    def constraint(self, kind: str, schema: dict | None = None, strict: bool | None = None) -> JSONConstraint:
        """A fresh constraint for `json_object` or `json_schema` (raises ValueError naming the problem)."""
        if kind == "json_object":
            return self.compiled({"json_schema": any_json()})
        if strict:
            problem = strict_problem(schema, "response_format.json_schema.schema")
            if problem:
                raise StrictSchemaError(problem)
        try:
            return self.compiled({"json_schema": terminating(schema)})
        except ValueError as e:
            raise ValueError(f"response_format.json_schema.schema cannot be compiled: {e}") from None

    def compiled(self, spec: dict) -> JSONConstraint:
        return JSONConstraint(self.compiler.compile(spec), self.vocab_size)

    def close(self) -> None:
        if self._compiler is not None:
            self._compiler.close()
