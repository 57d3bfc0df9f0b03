"""The Jinja sandbox chat templates render in: transformers' environment, with a budget on steps, time and size.

A checkpoint's chat template is untrusted code. jinja2's sandbox stops it from reaching Python internals, but
not from looping `range(100000)` inside `range(100000)`, recursing until Python's stack gives out, or building
`'a' * 10**10` (issue 26: such templates hung `serve` at load, and one that looped on a trigger word held every
worker thread). Here every render runs under a `TemplateBudget`, checked cooperatively from the sandbox's own
hooks, so a Python thread needs no killing:
- steps: every loop iteration (each `for` iterable is wrapped), call, filter, attribute lookup and intercepted
  operator counts one; past `max_steps`, past `seconds`, or once the caller cancels, the render stops;
- size: an operation that would build a string or list longer than `max_output` is refused before it runs
  (`*`, `+`, `~`, `%`, `str.format`, `center`, `replace`, `join`, `indent`, `batch`, `tojson(indent=...)`,
  ...), and everything built, output included, counts against `max_work`, which bounds memory;
- depth: calls (macros, recursive `loop(...)`) nest at most `max_depth` deep.
Exceeding any of these raises `TemplateBudgetError`, a ValueError naming the limit.
"""

from __future__ import annotations

import json
import re
import string
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class TemplateBudget:
    """Limits on one chat-template render (a legitimate template rendering 1,024 turns uses well under 1%)."""

    seconds: float = 5.0
    max_steps: int = 1_000_000  # about 0.5 s of the tightest loop
    max_output: int = 16 << 20  # characters in the rendered chat, and in any one string or list it builds
    max_work: int = 64 << 20  # characters (or items) of everything it builds, output included: bounds memory
    max_depth: int = 64  # nested calls: macros calling macros, recursive loop(...)

    def __post_init__(self) -> None:
        for name in ("seconds", "max_steps", "max_output", "max_work", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"TemplateBudget.{name} must be a positive number, got {value!r}")


class TemplateBudgetError(ValueError):
    """A chat template went over its budget (or its render was cancelled)."""


_METER: ContextVar[_Meter | None] = ContextVar("hytron_template_meter", default=None)
_LARGE_INT_BITS = 4096  # integers a template computes stay small (10**10**10 would take minutes)
_FORMAT_NUMBER = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")


class _Meter:
    """The running account of one render (set in a ContextVar, so concurrent renders in threads are apart)."""

    __slots__ = ("budget", "deadline", "cancel", "steps", "work", "depth")

    def __init__(self, budget: TemplateBudget, cancel: threading.Event | None = None):
        self.budget, self.cancel = budget, cancel
        self.deadline = time.monotonic() + budget.seconds
        self.steps = self.work = self.depth = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps & 31:  # the clock and the cancel flag every 32 steps (a step is about a microsecond)
            return
        if self.steps > self.budget.max_steps:
            raise TemplateBudgetError(f"chat template took more than {self.budget.max_steps:,} steps")
        if time.monotonic() > self.deadline:
            raise TemplateBudgetError(f"chat template ran longer than {self.budget.seconds:g} s")
        if self.cancel is not None and self.cancel.is_set():
            raise TemplateBudgetError("chat template rendering was cancelled")

    def size(self, n: int, what: str) -> None:
        """Account for a value of `n` characters or items about to be built (refused when too large)."""
        if n > self.budget.max_output:
            raise TemplateBudgetError(f"chat template would build {what} of {n:,} characters (limit "
                                      f"{self.budget.max_output:,})")
        self.work += n
        if self.work > self.budget.max_work:
            raise TemplateBudgetError(f"chat template built more than {self.budget.max_work:,} characters in all")


def meter() -> _Meter:
    """The current render's meter (a fresh default one outside a render, so the size checks still hold)."""
    m = _METER.get()
    return m if m is not None else _Meter(TemplateBudget())


@contextmanager
def metered(budget: TemplateBudget, cancel: threading.Event | None = None):
    """Render under `budget` in this thread (and stop at the next step once `cancel` is set)."""
    token = _METER.set(_Meter(budget, cancel))
    try:
        yield
    finally:
        _METER.reset(token)


def _size(x: Any) -> int:
    return len(x) if isinstance(x, (str, list, tuple, dict)) else 0


def _check_bits(bits: int) -> None:
    if bits > _LARGE_INT_BITS:
        raise TemplateBudgetError(f"chat template would compute an integer of more than {_LARGE_INT_BITS} bits")


def _check_format_spec(fmt: str, m: _Meter, args: tuple, kwargs: dict) -> None:
    """str.format: widths and precisions bounded; the result at most the literal text plus every field."""
    fields = 0
    for _literal, field, spec, _conversion in string.Formatter().parse(fmt):
        if field is None:
            continue
        fields += 1
        if spec and ("{" in spec or any(int(n) > m.budget.max_output for n in _FORMAT_NUMBER.findall(spec))):
            raise TemplateBudgetError(f"chat template format spec {spec[:40]!r} is too wide or nested")
    largest = max((_size(v) for v in (*args, *kwargs.values())), default=0)
    m.size(len(fmt) + fields * max(largest, 64), "a formatted string")


def _check_percent(fmt: str, values: Any, m: _Meter) -> None:
    specs = _PERCENT_SPEC.findall(fmt)
    for width, precision in specs:
        if "*" in (width, precision) or any(n and int(n) > m.budget.max_output for n in (width, precision)):
            raise TemplateBudgetError("chat template %-format width is too large (or given by *)")
    items = values if isinstance(values, tuple) else (values,)
    largest = max((_size(v) for v in items), default=0)
    m.size(len(fmt) + len(specs) * max(largest, 64), "a formatted string")


def _check_str_method(m: _Meter, s: str, name: str, args: tuple, kwargs: dict) -> tuple:
    """Bound the result of a str method before it runs; returns args (an iterable to join, materialized)."""
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        m.size(args[0], f"str.{name}()")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        m.size(len(s) + s.count("\t") * (tab if isinstance(tab, int) else 8), "str.expandtabs()")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = s.count(args[0]) if args[0] else len(s) + 1
        m.size(len(s) + count * max(0, len(args[1]) - len(args[0])), "str.replace()")
    elif name == "join" and args:
        items = list(_steps_through(args[0]))
        m.size(sum(_size(x) for x in items) + len(s) * max(0, len(items) - 1), "str.join()")
        args = (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((_size(v) for v in args[0].values()), default=1)
        m.size(len(s) * max(1, longest), "str.translate()")
    return args


def _steps_through(iterable):
    """Iterate, one step per item (every `for` loop's iterable is wrapped in this)."""
    m = meter()
    for item in iterable:
        m.step()
        yield item


def _environment():
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.runtime import LoopContext, Macro
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import _PassArg

    class BudgetedSandbox(ImmutableSandboxedEnvironment):
        # intercepted operators are neither constant-folded at compile time nor run without these checks
        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def call_binop(self, context, operator, left, right):
            m = meter()
            m.step()
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                        m.size(len(seq) * max(n, 0), "a repeated string or list")
                if isinstance(left, int) and isinstance(right, int):
                    _check_bits(left.bit_length() + right.bit_length())
            elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
                _check_bits(abs(left).bit_length() * max(right, 0))
            elif operator == "+" and _size(left) and _size(right):
                m.size(_size(left) + _size(right), "a concatenation")
            elif operator == "%" and isinstance(left, str):
                _check_percent(left, right, m)
            return super().call_binop(context, operator, left, right)

        def getattr(self, obj, attribute):
            meter().step()
            return super().getattr(obj, attribute)

        def getitem(self, obj, argument):
            meter().step()
            return super().getitem(obj, argument)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's signature)
            m = meter()
            m.step()
            made = isinstance(__obj, Macro)  # a macro's output is a new string
            wrapped = getattr(__obj, "__wrapped__", None)  # the sandbox's str.format wrapper
            if isinstance(getattr(wrapped, "__self__", None), str) and wrapped.__name__ in ("format", "format_map"):
                fields = args[0] if wrapped.__name__ == "format_map" and args else kwargs
                _check_format_spec(wrapped.__self__, m, args, fields if isinstance(fields, dict) else {})
                made = True
            elif isinstance(getattr(__obj, "__self__", None), str):
                args = _check_str_method(m, __obj.__self__, getattr(__obj, "__name__", ""), args, kwargs)
                made = True
            elif isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
                args = (_steps_through(args[0]), *args[1:])
            m.depth += 1
            try:
                if m.depth > m.budget.max_depth:
                    raise TemplateBudgetError(f"chat template calls nest deeper than {m.budget.max_depth}")
                result = super().call(__context, __obj, *args, **kwargs)
            finally:
                m.depth -= 1
            if made:
                m.size(_size(result), "a string")
            return result

    class GenerationSpans(Extension):
        """`{% generation %}...{% endgeneration %}`: records the character span it rendered (for loss masks)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_mark", [nodes.Name("_spans", "load"),
                                                              nodes.Name("_rendered", "load")]),
                                   [], [], body).set_lineno(lineno)

        def _mark(self, spans, rendered, caller):
            text = caller()
            if isinstance(spans, list) and isinstance(rendered, list):  # only while rendering with spans
                start = sum(len(b) for b in rendered)
                spans.append((start, start + len(text)))
            return text

    class Namespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):  # noqa: N805 (jinja's own signature trick, so namespace(self=...) works)
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set namespace attribute {name!r}")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        m = meter()
        if isinstance(indent, int) and not isinstance(indent, bool):
            indent = max(indent, 0)
        if _size(indent) > 64 or (isinstance(indent, int) and indent > 64):
            raise TemplateBudgetError("chat template tojson indent is larger than 64")
        if separators is not None and sum(_size(s) for s in separators) > 64:
            raise TemplateBudgetError("chat template tojson separators are longer than 64 characters")
        if indent is None:
            text = json.dumps(x, ensure_ascii=ensure_ascii, separators=separators, sort_keys=sort_keys)
            m.size(len(text), "a JSON text")
            return text
        out, size = [], 0  # indented: chunk by chunk, so a deep value cannot build a huge text unnoticed
        encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                                   sort_keys=sort_keys)
        for i, chunk in enumerate(encoder.iterencode(x)):
            size += len(chunk)
            if i % 256 == 0:
                m.step()
                if size > m.budget.max_output:
                    break
            out.append(chunk)
        m.size(size, "a JSON text")
        return "".join(out)

    def charge_output(value):  # every {{ ... }} output, inside macros and set blocks too
        if isinstance(value, str):
            meter().size(len(value), "an output")
        return value

    env = BudgetedSandbox(trim_blocks=True, lstrip_blocks=True, finalize=charge_output,
                          extensions=[GenerationSpans, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.filters = {name: _bounded_filter(name, f, _PassArg) for name, f in env.filters.items()}
    env.filters["_hytron_steps"] = jinja2.pass_context(lambda context, iterable: _steps_through(iterable))
    env.filters["_hytron_concat"] = jinja2.pass_context(_concat)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt),
                       dict=lambda *a, **k: dict(*a, **k), namespace=Namespace)
    return env


def _bounded_filter(name: str, f, pass_arg):
    """A filter that counts a step, refuses arguments that would build a too-large result, and accounts for
    what it builds. It takes the context, which also keeps jinja from running it at compile time."""
    import jinja2

    kind = pass_arg.from_obj(f)

    def first_arg(context):
        if kind is pass_arg.context:
            return (context,)
        if kind is pass_arg.eval_context:
            return (context.eval_ctx,)
        if kind is pass_arg.environment:
            return (context.environment,)
        return ()

    def bounded(context, value, *args, **kwargs):
        m = meter()
        m.step()
        if name == "center":
            width = args[0] if args else kwargs.get("width", 80)
            if isinstance(width, int):
                m.size(width, "a centered string")
        elif name == "indent":
            width = args[0] if args else kwargs.get("width", 4)
            per_line = width if isinstance(width, int) else _size(width)
            m.size(len(str(value)) + (str(value).count("\n") + 1) * per_line, "an indented string")
        elif name in ("batch", "slice"):
            count = args[0] if args else kwargs.get("linecount" if name == "batch" else "slices", 0)
            if isinstance(count, int):
                m.size(count, f"a {name}")
        elif name == "replace" and isinstance(value, str) and len(args) >= 2:
            old, new = str(args[0]), str(args[1])
            count = value.count(old) if old else len(value) + 1
            m.size(len(value) + count * max(0, len(new) - len(old)), "a replaced string")
        elif name == "format" and isinstance(value, str):
            _check_percent(value, kwargs or args, m)
        elif name in ("join", "sum"):
            value = list(_steps_through(value))
            sep = args[0] if args and name == "join" else kwargs.get("d", "")
            sized = sum(_size(x) for x in value)
            if name == "sum" and sized and len(value) > 10_000:  # adding lists one by one is quadratic
                raise TemplateBudgetError("chat template sums more than 10,000 lists or strings")
            m.size(sized + _size(sep) * max(0, len(value) - 1), f"a {name}")
        result = f(*first_arg(context), value, *args, **kwargs)
        if result is not value and isinstance(result, (str, list)):
            m.size(len(result), f"the result of |{name}")
        return result

    bounded.__name__ = f"bounded_{name}"
    return jinja2.pass_context(bounded)


def compile_template(env, source: str):
    """(ast, template): the template's parse tree, and the compiled template with every `for` loop metered and
    every `~` concatenation bounded."""
    from jinja2 import nodes
    from jinja2.visitor import NodeTransformer

    class Meter(NodeTransformer):
        def visit_For(self, node):
            node = self.generic_visit(node)
            node.iter = nodes.Filter(node.iter, "_hytron_steps", [], [], None, None, lineno=node.lineno)
            return node

        def visit_Concat(self, node):
            node = self.generic_visit(node)
            return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_hytron_concat", [], [], None, None,
                                lineno=node.lineno)

    metered_ast = Meter().visit(env.parse(source))
    metered_ast.set_environment(env)
    return env.parse(source), env.from_string(metered_ast)


def _concat(context, parts: list) -> str:
    """`a ~ b ~ c`, refused before it is built when too long."""
    m = meter()
    m.step()
    parts = [p if isinstance(p, str) else str(p) for p in parts]
    m.size(sum(map(len, parts)), "a concatenation")
    return "".join(parts)
