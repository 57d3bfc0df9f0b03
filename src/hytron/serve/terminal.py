"""`hytron chat`: a streaming chat in the terminal, with the thinking shown dimmed and a per-chat budget.

Lines starting with `/` are commands: `/think` and `/no_think` (alone on a line) switch thinking for the
next turns, `/budget N` (or `/budget off`) sets the thinking budget, `/reset` forgets the conversation,
`/quit` (or end of input) leaves. `/think` or `/no_think` inside a message apply to that message, as the
chat template defines.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from hytron.infer import SamplingParams


@dataclass
class ChatSettings:
    """What a terminal chat starts with (the `/think`, `/no_think` and `/budget` commands change the first two)."""

    thinking: bool = True
    max_thinking_tokens: int | None = None  # None: unlimited
    max_tokens: int = 512
    temperature: float = 0.7
    seed: int | None = None


def chat_loop(model_dir: str | Path, config=None, settings: ChatSettings | None = None, stdin=None,
              stdout=None) -> int:
    """Chat with the model in `model_dir` (served by a `Backend` with `config`, a `ServeConfig`) on stdin/stdout."""
    from hytron.serve.backend import Backend, ServeConfig

    args = settings or ChatSettings()
    stdin, out = stdin or sys.stdin, stdout or sys.stdout
    tty = out.isatty()
    dim, reset = ("\033[2m", "\033[0m") if tty else ("", "")
    backend = Backend.load_in_engine_thread(model_dir, config or ServeConfig(max_slots=1))
    if not backend.tokenizer.has_chat_template:
        raise ValueError(f"{model_dir}: the model has no chat template (chat needs one; `hytron serve` still "
                         "serves completions)")
    backend.start()
    thinking, budget = args.thinking, args.max_thinking_tokens
    history: list[dict] = []

    def say(text: str) -> None:
        out.write(text)
        out.flush()

    say(f"hytron chat · {backend.name} · thinking {'on' if thinking else 'off'}"
        f"{'' if budget is None else f' · budget {budget}'} · /think /no_think /budget N /reset /quit\n")
    try:
        while True:
            say("> " if tty else "")
            line = stdin.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if text in ("/think", "/no_think"):
                thinking = text == "/think"
                say(f"[thinking {'on' if thinking else 'off'}]\n")
                continue
            if text == "/reset":
                history.clear()
                say("[new conversation]\n")
                continue
            if text.startswith("/budget"):
                value = text.split()[1:] or ["off"]
                if value[0] == "off":
                    budget = None
                elif value[0].isdigit():
                    budget = int(value[0])
                else:
                    say("[usage: /budget N or /budget off]\n")
                    continue
                say(f"[thinking budget {'off' if budget is None else budget}]\n")
                continue
            history.append({"role": "user", "content": text})
            ids, opens = backend.chat_prompt(history, thinking)
            room = backend.max_len - len(ids)
            if room < 1:
                say("[the conversation no longer fits the context: /reset]\n")
                history.pop()
                continue
            params = SamplingParams(max_tokens=min(args.max_tokens, room), temperature=args.temperature,
                                    seed=args.seed, thinking=opens, max_thinking_tokens=budget if opens else None)
            req = backend.engine.submit(ids, params)
            in_reasoning = False
            try:
                for d in req:
                    if d.reasoning:
                        if not in_reasoning:
                            say(f"{dim}thinking: ")
                            in_reasoning = True
                        say(d.reasoning)
                    if d.text:
                        if in_reasoning:
                            say(f"{reset}\n")
                            in_reasoning = False
                        say(d.text)
            except KeyboardInterrupt:
                req.cancel()
            r = req.result()
            spec = (f", {r.mean_accepted_length:.2f} tokens per step ({r.acceptance_rate:.0%} of drafts accepted)"
                    if r.drafts else "")
            say(f"{reset if in_reasoning else ''}\n{dim}[{r.finish_reason} · {r.completion_tokens} tokens, "
                f"{r.reasoning_tokens} thinking{spec}]{reset}\n")
            history.append({"role": "assistant", "content": r.text,
                            **({"reasoning_content": r.reasoning} if r.reasoning else {})})
    except KeyboardInterrupt:  # Ctrl-C at the prompt: leave quietly
        say("\n")
    finally:
        backend.close()
    return 0
