"""Chat SFT data: reasoning rows from problems (verbose/concise, reasoning-off share, truncated traces), JSONL I/O.

One row is one conversation, in the schema of Nemotron's post-training data (a per-row `reasoning` switch):

    {"messages": [{"role": "user", "content": "Compute 7 + 5 - 3."},
                  {"role": "assistant", "content": "The answer is 9.", "reasoning_content": "7 + 5 = 12\\n..."}],
     "reasoning": "on"}

`reasoning: "off"` rows train the model to answer straight after the empty `<think></think>` the chat
template pre-fills for `/no_think`; any reasoning such a row carries is dropped. Users bring their own rows
in the same schema (`read_chat_jsonl` validates them and names the bad line).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from hytron.reasoning.tasks import Problem, answer_text
from hytron.reasoning.traces import render_trace, truncate_trace

NO_THINK = " /no_think"


def prompt_messages(problem: Problem, thinking: bool = True) -> list[dict]:
    """The user turn that asks `problem` (with `/no_think` appended when thinking is off)."""
    return [{"role": "user", "content": problem.question + ("" if thinking else NO_THINK)}]


def problem_row(problem: Problem, trace: str | None) -> dict:
    """A chat row answering `problem`: reasoning on with `trace`, or off when `trace` is None."""
    thinking = trace is not None
    reply = {"role": "assistant", "content": answer_text(problem.answer)}
    if thinking:
        reply["reasoning_content"] = trace
    return {"messages": [*prompt_messages(problem, thinking), reply], "reasoning": "on" if thinking else "off",
            "id": problem.id, "kind": problem.kind, "answer": problem.answer}


def sft_rows(problems: Sequence[Problem], style: str = "verbose", seed: int = 0, *, off_share: float = 0.1,
             truncated_share: float = 0.05, **trace_options) -> list[dict]:
    """Rows for `problems`: a share with reasoning off, a share with truncated traces (answer kept), the rest in
    `style`. Deterministic in `seed`. Shares follow Nano 2's SFT (~10% reasoning removed; a few % truncated)."""
    for name, share in (("off_share", off_share), ("truncated_share", truncated_share)):
        if not 0 <= share <= 1:
            raise ValueError(f"{name}: must be in [0, 1], got {share}")
    if off_share + truncated_share > 1:
        raise ValueError(f"off_share + truncated_share must be <= 1, got {off_share + truncated_share}")
    rows = []
    for p in problems:
        rng = random.Random(f"row-{seed}-{p.id}")
        u = rng.random()
        if u < off_share:
            rows.append(problem_row(p, None))
            continue
        trace = render_trace(p, style, rng, **trace_options)
        if u < off_share + truncated_share:
            trace = truncate_trace(trace, rng)
        rows.append(problem_row(p, trace))
    return rows


# ---- JSONL ----------------------------------------------------------------------------------------------------
def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_chat_jsonl(path: str | Path) -> list[dict]:
    """Chat rows from a JSONL file, each checked: `messages` (role/content strings, an assistant turn) and an
    optional `reasoning` of "on"/"off" (or true/false)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data file not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
        try:
            rows.append(normalise_row(row))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def normalise_row(row: dict) -> dict:
    """The row with `reasoning` as "on"/"off" (inferred from the last assistant turn when absent)."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise ValueError("a row needs a non-empty 'messages' list")
    for i, m in enumerate(row["messages"]):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] needs string 'role' and 'content'")
    if not any(m["role"] == "assistant" for m in row["messages"]):
        raise ValueError("a row needs at least one assistant message to train on")
    flag = row.get("reasoning")
    if flag is None:
        last = [m for m in row["messages"] if m["role"] == "assistant"][-1]
        flag = "on" if (last.get("reasoning_content") or "</think>" in last["content"]) else "off"
    elif isinstance(flag, bool):
        flag = "on" if flag else "off"
    if flag not in ("on", "off"):
        raise ValueError(f"'reasoning' must be \"on\" or \"off\" (or true/false), got {row.get('reasoning')!r}")
    return {**row, "reasoning": flag}


def encode_row(tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of a row through the chat template; mask 1 exactly on assistant tokens. A reasoning-off
    row has its reasoning removed, so its assistant turns render as `<think></think>ANSWER<|im_end|>`."""
    row = normalise_row(row)
    messages = row["messages"]
    if row["reasoning"] == "off":
        messages = [_without_reasoning(m) if m["role"] == "assistant" else m for m in messages]
    return tokenizer.render_chat(messages, enable_thinking=row["reasoning"] == "on")


def _without_reasoning(message: dict) -> dict:
    content = message["content"]
    if "</think>" in content:
        content = content.split("</think>")[-1].strip()
    return {k: v for k, v in message.items() if k != "reasoning_content"} | {"content": content}
