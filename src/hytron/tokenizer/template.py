"""Chat templates: compile a checkpoint's Jinja template and render chats exactly as `transformers` does.

The environment matches `transformers.apply_chat_template` (sandboxed Jinja with `trim_blocks`/`lstrip_blocks`,
`loopcontrols`, the `generation` tag, a `tojson` that keeps non-ASCII and takes `indent`/`separators`/
`sort_keys`, `raise_exception`, `strftime_now`, `dict`, an underscore-refusing `namespace`), and so do the
variables a template sees: `messages` (None-valued keys dropped; `reasoning_content`, `thinking` and
`reasoning` filled from one another), `tools`, `documents`, `add_generation_prompt`, the named special tokens
(`bos_token`, `eos_token`, ...) and any extra keyword (`enable_thinking`, `truncate_history_thinking`, ...:
vLLM's `chat_template_kwargs`). A template is compiled when the tokenizer loads, so a syntax error is refused
there with the file and line, never at the first request.

Control tokens in user input (`sanitize=True`, what the server does): a chat message that contains the text
`<|im_start|>system` must not open a system turn. As `transformers`' opt-in
`apply_chat_template(..., sanitize_control_tokens=True)` does, control-token strings inside messages, tools
and keyword values are wrapped in two private-use markers before rendering; after rendering, marked tokens
are encoded as plain text and the template's own markers as control tokens. (Plain `transformers`
`apply_chat_template` leaves them as control tokens; hytron's server always sanitizes, training data is
trusted and rendered as written.)
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from hytron.tokenizer.sandbox import TemplateBudget, TemplateBudgetError, _environment, compile_template, metered

# hytron's own chat template (tokenizers hytron trains): ChatML turn markers with Nano 2's reasoning control and
# Nemotron 3's XML tools and tool calls, see `hytron.tokenizer.core`. `{% generation %}` marks what the assistant
# produces (content, tool calls, end of turn): our renderer and transformers (`return_assistant_tokens_mask=True`)
# both turn it into the loss mask.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(think=(enable_thinking if enable_thinking is defined else true), tools='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] in ['system', 'user'] and m['content'] is string -%}"
    # where the last /think and /no_think end (0: absent), by split and length: runtimes with their own Jinja
    # (llama.cpp's llama-server) have no str.rfind, nor a unary minus after `else`
    "{%- set c = m['content'] -%}"
    "{%- set on = (c | length) - (c.split('/think')[-1] | length) if '/think' in c else 0 -%}"
    "{%- set off = (c | length) - (c.split('/no_think')[-1] | length) if '/no_think' in c else 0 -%}"
    "{%- if on > off -%}{%- set ns.think = true -%}"
    "{%- elif off > on -%}{%- set ns.think = false -%}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    # tools, listed as Nemotron 3 lists them (XML), at the end of the system turn (one of their own if none)
    "{%- if tools -%}"
    "{%- for t in tools -%}{%- set f = t['function'] if t['function'] is defined else t -%}"
    "{%- set ns.tools = ns.tools + '\\n<function>\\n<name>' + f['name'] + '</name>' -%}"
    "{%- if f['description'] is defined and f['description'] -%}"
    "{%- set ns.tools = ns.tools + '\\n<description>' + f['description'] + '</description>' -%}{%- endif -%}"
    "{%- set ns.tools = ns.tools + '\\n<parameters>' -%}"
    "{%- set params = f['parameters'] if f['parameters'] is defined and f['parameters'] else {} -%}"
    "{%- for name, p in (params['properties'] if params['properties'] is defined else {}).items() -%}"
    "{%- set ns.tools = ns.tools + '\\n<parameter>\\n<name>' + name + '</name>\\n<type>' + (p['type'] if "
    "p['type'] is defined and p['type'] is string else 'string') + '</type>' -%}"
    "{%- if p['description'] is defined and p['description'] -%}"
    "{%- set ns.tools = ns.tools + '\\n<description>' + p['description'] + '</description>' -%}{%- endif -%}"
    "{%- if p['enum'] is defined -%}{%- set ns.tools = ns.tools + '\\n<enum>' + p['enum'] | tojson + '</enum>' -%}"
    "{%- endif -%}"
    "{%- set ns.tools = ns.tools + '\\n</parameter>' -%}"
    "{%- endfor -%}"
    "{%- if params['required'] is defined -%}"
    "{%- set ns.tools = ns.tools + '\\n<required>' + params['required'] | tojson + '</required>' -%}{%- endif -%}"
    "{%- set ns.tools = ns.tools + '\\n</parameters>\\n</function>' -%}"
    "{%- endfor -%}"
    "{%- set ns.tools = '# Tools\\n\\nYou may call these functions:\\n<tools>' + ns.tools + '\\n</tools>\\n\\nTo "
    "call a function reply with\\n<tool_call>\\n<function=NAME>\\n<parameter=ARG>\\nVALUE\\n</parameter>\\n"
    "</function>\\n</tool_call>' -%}"
    "{%- endif -%}"
    "{{- bos_token -}}"
    "{%- if ns.tools and messages[0]['role'] not in ['system', 'developer'] -%}"
    "{{- '<|im_start|>system\\n' + ns.tools + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- set content = m['content'] if m['content'] is string else '' -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set unfinished = false -%}"
    "{%- if m['reasoning_content'] is defined and m['reasoning_content'] -%}"
    "{%- set reasoning = m['reasoning_content'] | trim -%}{%- set answer = content | trim -%}"
    "{%- elif '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].replace('<think>', '') | trim -%}"
    "{%- set answer = content.split('</think>')[-1] | trim -%}"
    "{%- elif '<think>' in content -%}"
    "{%- set reasoning = content.split('<think>')[-1] | trim -%}{%- set answer = '' -%}"
    "{%- set unfinished = true -%}"
    "{%- else -%}"
    "{%- set reasoning = '' -%}{%- set answer = content | trim -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{%- if reasoning and loop.last -%}"
    "{{- '<think>\\n' + reasoning -}}"
    "{%- if not unfinished -%}{{- '\\n</think>\\n' + answer -}}{%- endif -%}"
    "{%- else -%}"
    "{{- '<think></think>' + answer -}}"
    "{%- endif -%}"
    # tool calls in Nemotron 3's XML: one <parameter=K> block per argument, strings as they are, the rest as JSON
    "{%- if m['tool_calls'] is defined and m['tool_calls'] and not unfinished -%}"
    "{%- for call in m['tool_calls'] -%}"
    "{%- set fn = call['function'] if call['function'] is defined else call -%}"
    "{{- ('\\n' if answer or not loop.first else '') + '<tool_call>\\n<function=' + fn['name'] + '>\\n' -}}"
    "{%- if fn['arguments'] is mapping -%}{%- for k, v in fn['arguments'].items() -%}"
    "{{- '<parameter=' + k + '>\\n' + (v if v is string else v | tojson) + '\\n</parameter>\\n' -}}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '</function>\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    # tool results: consecutive ones in one user turn, each in <tool_response> (as Nemotron 3)
    "{%- elif m['role'] == 'tool' -%}"
    "{%- if loop.first or loop.previtem['role'] != 'tool' -%}{{- '<|im_start|>user\\n' -}}{%- endif -%}"
    "{{- '<tool_response>\\n' + content + '\\n</tool_response>\\n' -}}"
    "{%- if loop.last or loop.nextitem['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- else -%}"
    "{%- if m['role'] in ['system', 'user'] -%}"
    "{%- set content = content.replace('/no_think', '').replace('/think', '') | trim -%}"
    "{%- endif -%}"
    "{%- if loop.first and ns.tools and m['role'] in ['system', 'developer'] -%}"
    "{%- set content = (content + '\\n\\n' if content else '') + ns.tools -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' + ('<think>\\n' if ns.think else '<think></think>') -}}"
    "{%- endif -%}"
)

CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "  # the marker transformers uses, so both cut at the same place
MARK_START, MARK_END = "\U000f0000", "\U000f0001"  # private-use code points around control tokens in user input
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class ChatTemplate:
    """One compiled chat template. `origin` names where it came from (a file), for error messages."""

    def __init__(self, source: str, origin: str = "chat template"):
        import jinja2

        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{origin}: the chat template must be a non-empty string")
        self.source, self.origin = source, origin
        self._env = _environment()
        try:
            self._ast, self._template = compile_template(self._env, source)
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"{origin}: chat template syntax error at line {e.lineno}: {e.message}") from None

    @cached_property
    def variables(self) -> frozenset[str]:
        """Names the template reads from its context (messages, tools, enable_thinking, ...)."""
        from jinja2 import meta

        return frozenset(meta.find_undeclared_variables(self._ast))

    @cached_property
    def literal_text(self) -> str:
        """The template's literal strings joined by NULs (a substring search cannot match across two)."""
        from jinja2 import nodes

        found = {n.data for n in self._ast.find_all(nodes.TemplateData)}
        found |= {n.value for n in self._ast.find_all(nodes.Const) if isinstance(n.value, str)}
        return "\0".join(sorted(found))

    def render(self, messages: Sequence[dict], *, tools: list | None = None, documents: list | None = None,
               add_generation_prompt: bool = False, continue_final_message: bool = False,
               special_tokens: dict | None = None, variables: dict | None = None,
               mark: Callable[[Any], Any] | None = None, spans: list | None = None,
               budget: TemplateBudget | None = None, cancel: threading.Event | None = None) -> str:
        """The rendered chat. `special_tokens`: bos_token, eos_token, ...; `variables`: template kwargs
        (they override special tokens); `mark` wraps control tokens in user input (messages, tools, kwargs; see
        the module docstring); `spans` collects `{% generation %}` character spans. The render stays within
        `budget` (steps, seconds, size: `hytron.tokenizer.sandbox`) and stops soon after `cancel` is set;
        going over is a `TemplateBudgetError` (a ValueError)."""
        import jinja2

        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot be combined")
        chat = [_alias_reasoning({k: v for k, v in m.items() if v is not None}) for m in check_messages(messages)]
        kwargs = dict(variables or {})
        if mark is not None:
            chat, tools, documents = mark(chat), mark(tools), mark(documents)
            kwargs = mark(kwargs)
        kwargs = {**(special_tokens or {}), **kwargs}
        final = None
        if continue_final_message:  # mark where the message ends, render, cut there (as transformers does)
            if not chat or chat[-1]["role"] != "assistant" or not isinstance(chat[-1].get("content"), str):
                raise ValueError("continue_final_message needs a final assistant message with text content")
            final = chat[-1]["content"]
            chat[-1] = {**chat[-1], "content": final + CONTINUE_TAG}
        rendered: list[str] = []
        budget = budget or TemplateBudget()
        size = 0
        context = {"messages": chat, "tools": tools, "documents": documents,
                   "add_generation_prompt": add_generation_prompt, **kwargs, "_spans": spans, "_rendered": rendered}
        try:
            with metered(budget, cancel):
                for block in self._template.generate(context):  # one dict: a kwarg named `self` is just a name
                    size += len(block)
                    if size > budget.max_output:
                        raise TemplateBudgetError(f"chat template output is longer than {budget.max_output:,} "
                                                  "characters")
                    rendered.append(block)
        except TemplateBudgetError:
            raise
        except RecursionError:
            raise TemplateBudgetError("chat template recursed too deeply") from None
        except MemoryError:
            raise TemplateBudgetError("chat template ran out of memory") from None
        except OverflowError as e:  # range(10**10) (the sandbox's range limit), a float too large
            raise TemplateBudgetError(f"chat template: {e}") from None
        except jinja2.TemplateError as e:  # raise_exception(...) in the template, or an undefined operation
            raise ValueError(f"chat template: {e}") from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:  # e.g. '+' on a str and a list
            raise ValueError(f"chat template cannot render this input: {type(e).__name__}: {e}") from None
        text = "".join(rendered)
        if final is not None:
            if final.strip() not in text or CONTINUE_TAG.strip() not in text:
                raise ValueError("continue_final_message: the chat template dropped part of the final message")
            cut = text.rindex(CONTINUE_TAG.strip())
            text = text[:cut] if text[cut:cut + len(CONTINUE_TAG)] == CONTINUE_TAG else text[:cut].rstrip()
        return text


def _alias_reasoning(message: dict) -> dict:
    """`reasoning_content` (what templates read), `thinking` (gpt-oss) and `reasoning` (vLLM) as one another."""
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    return message if reasoning is None else {"thinking": reasoning, **message, "reasoning_content": reasoning}


def check_messages(messages: Sequence[dict]) -> list[dict]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages must not be empty")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"messages[{i}] must be a dict with a string 'role', got {m!r}")
        content = m.get("content")
        if content is None and not (m["role"] == "assistant" and m.get("tool_calls")):
            raise ValueError(f"messages[{i}] needs a 'content' (only an assistant message with tool_calls may "
                             "omit it)")
        if content is not None and not isinstance(content, (str, list)):
            raise ValueError(f"messages[{i}]: 'content' must be a string or a list of parts")
    return list(messages)


# ---- control tokens in user input -------------------------------------------------------------------------
class ControlTokens:
    """Marks control-token strings in user input and encodes a rendered chat with marked ones as plain text."""

    def __init__(self, tokens: Sequence[str]):
        longest_first = sorted(set(tokens), key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, longest_first)) or "(?!)")
        # a marked token, or a lone marker (a template's string method split a marked token)
        self.markers = re.compile(f"{MARK_START}({self.pattern.pattern}){MARK_END}|[{MARK_START}{MARK_END}]")

    def mark(self, obj: Any) -> Any:
        """Wrap every control token inside strings of `obj` (recursively; dict keys untouched) in the markers."""
        if isinstance(obj, str):
            obj = obj.replace(MARK_START, "").replace(MARK_END, "")  # a client cannot forge a marked token
            return self.pattern.sub(f"{MARK_START}\\g<0>{MARK_END}", obj)
        if isinstance(obj, dict):
            return {k: self.mark(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.mark(v) for v in obj]
        return obj

    def encode(self, text: str, encode: Callable[[str], list[int]], encode_plain: Callable[[str], list[int]],
               token_to_id: Callable[[str], int | None]) -> list[int]:
        """Ids of a chat rendered from marked input: the template's control tokens as tokens, marked ones as text.

        Pieces after the first are encoded behind a newline that is then removed, so a SentencePiece-style
        tokenizer adds no word-start prefix in the middle of the chat (transformers does the same)."""
        pieces = self.markers.split(text)  # [text, marked token or None, text, ...]
        newline = encode("\n")
        ids = encode(pieces[0])
        for i, piece in enumerate(pieces[1:], start=1):
            if not piece:
                continue
            as_text = i % 2 == 1
            fn = encode_plain if as_text else encode
            piece_ids = fn("\n" + piece)
            piece_ids = piece_ids[len(newline):] if piece_ids[:len(newline)] == newline else fn(piece)
            if as_text and token_to_id(piece) in piece_ids:
                raise ValueError(f"cannot encode {piece!r} as text: the tokenizer makes it from plain text")
            ids += piece_ids
        return ids
