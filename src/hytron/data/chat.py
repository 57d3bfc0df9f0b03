"""Chat rows: the one schema every post-training stage reads and writes, checked, and rendered to token ids.

A row is one conversation in the schema of Nemotron's post-training data (a per-row `reasoning` switch):

    {"messages": [{"role": "user", "content": "..."},
                  {"role": "assistant", "content": "...", "reasoning_content": "..."}],
     "reasoning": "on" | "off"}

`off` drops the reasoning, so the turn trains the empty `<think></think>` that `/no_think` pre-fills.
Rendering goes through any tokenizer with a chat template (`render_chat`); nothing here needs torch.
"""

from __future__ import annotations

from pathlib import Path

from hytron.data.io import iter_jsonl


def read_chat_jsonl(path: str | Path) -> list[dict]:
    """Chat rows from a JSONL file, each checked: `messages` (role/content strings, an assistant turn) and an
    optional `reasoning` of "on"/"off" (or true/false)."""
    rows = []
    for n, row in iter_jsonl(path):
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
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not (
                isinstance(m.get("content"), str) or (m.get("content") is None and m.get("tool_calls"))):
            raise ValueError(f"messages[{i}] needs string 'role' and 'content' (content may be null with tool_calls)")
    if not any(m["role"] == "assistant" for m in row["messages"]):
        raise ValueError("a row needs at least one assistant message to train on")
    flag = row.get("reasoning")
    if flag is None:
        last = [m for m in row["messages"] if m["role"] == "assistant"][-1]
        flag = "on" if (last.get("reasoning_content") or "</think>" in (last.get("content") or "")) else "off"
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
    return tokenizer.render_chat(messages, enable_thinking=row["reasoning"] == "on", tools=row.get("tools"))


def _without_reasoning(message: dict) -> dict:
    content = message.get("content") or ""
    if "</think>" in content:
        content = content.split("</think>")[-1].strip()
    return {k: v for k, v in message.items() if k != "reasoning_content"} | {"content": content}
