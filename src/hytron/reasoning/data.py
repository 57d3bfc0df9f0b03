"""Chat SFT data: reasoning rows from problems (verbose/concise, reasoning-off share, truncated traces), JSONL I/O.

One row is one conversation, in the schema of Nemotron's post-training data (a per-row `reasoning` switch):

    {"messages": [{"role": "user", "content": "Compute 7 + 5 - 3."},
                  {"role": "assistant", "content": "The answer is 9.", "reasoning_content": "7 + 5 = 12\\n..."}],
     "reasoning": "on"}

`reasoning: "off"` rows train the model to answer straight after the empty `<think></think>` the chat
template pre-fills for `/no_think`; any reasoning such a row carries is dropped. Users bring their own rows
in the same schema; reading, validating and encoding rows is `hytron.data.chat`'s, writing `hytron.data.io`'s.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

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
