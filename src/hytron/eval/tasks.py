"""TinyWeb evaluation tasks: held-out text loss and bits per byte, world-fact QA and arithmetic by ranking.

TinyWeb (`hytron tinyweb`) writes held-out sets under `DIR/evals/` that never occur in the crawl:
`validation.jsonl` (clean text), `world_qa.jsonl` (questions about the generated world) and
`arithmetic.jsonl`. At the scale we train on a CPU, greedy exact-match answers are almost always wrong
(a ~1M-parameter model rarely spells a name right), which gives no signal. We therefore score
question-answering as multiple choice by log-likelihood, as lm-eval does for ARC or MMLU: the true answer
against `n_distractors` wrong answers of the same kind (other values of the same relation for world facts;
near misses for arithmetic), chance = 1 / (1 + n_distractors). `acc` ranks by summed log-likelihood,
`acc_norm` by log-likelihood per character of the answer (lm-eval's definitions). The choices are a pure
function of the file and the seed, so every model sees the same questions.
"""

from __future__ import annotations

import random
from pathlib import Path

from hytron.data.io import read_jsonl
from hytron.eval.scoring import Scorer, bits_per_byte

TASKS = ("validation", "world_qa", "arithmetic")
QA_TEMPLATE = "Question: {question}\nAnswer:"


def evals_dir(path: str | Path) -> Path:
    """The folder holding TinyWeb's evaluation files: `path/evals` for a TinyWeb dir, else `path` itself."""
    path = Path(path)
    d = path / "evals" if (path / "evals").is_dir() else path
    if not any((d / f"{t}.jsonl").is_file() for t in TASKS):
        raise FileNotFoundError(f"{path}: no TinyWeb evaluation files ({', '.join(t + '.jsonl' for t in TASKS)}); "
                                "give a `hytron tinyweb --out DIR` folder or its evals/ folder")
    return d


# ---------------------------------------------------------------- held-out text
def validation_text(scorer: Scorer, path: str | Path, limit: int | None = None) -> dict:
    """Mean loss (nats/token) and bits per byte over clean held-out documents (`<s> text </s>` each)."""
    docs = scorer.document_nll([r["text"] for r in read_jsonl(path, limit)])
    nll, tokens, n_bytes = (sum(d[k] for d in docs) for k in ("nll", "tokens", "bytes"))
    return {"loss": nll / max(1, tokens), "bpb": bits_per_byte(nll, n_bytes), "tokens": tokens, "bytes": n_bytes,
            "docs": len(docs)}


# ---------------------------------------------------------------- multiple choice
def world_qa_items(path: str | Path, *, n_distractors: int = 3, seed: int = 0,
                   limit: int | None = None) -> list[dict]:
    """World-fact questions as multiple choice: {id, question, choices, label}. Distractors are answers of
    other questions about the same relation (falling back to any other answers when a relation has too few)."""
    rows = read_jsonl(path)
    by_relation: dict[str, list[str]] = {}
    for r in rows:
        by_relation.setdefault(r["relation"], [])
        if r["answer"] not in by_relation[r["relation"]]:
            by_relation[r["relation"]].append(r["answer"])
    every = sorted({r["answer"] for r in rows})
    items = []
    for r in rows[:limit] if limit is not None else rows:
        rng = random.Random(f"{seed}-{r['id']}")
        pool = [a for a in by_relation[r["relation"]] if a != r["answer"]]
        if len(pool) < n_distractors:
            pool += [a for a in every if a != r["answer"] and a not in pool]
        choices = [r["answer"], *rng.sample(sorted(pool), n_distractors)]
        rng.shuffle(choices)
        items.append({"id": r["id"], "question": r["question"], "choices": choices,
                      "label": choices.index(r["answer"])})
    return items


def arithmetic_items(path: str | Path, *, n_distractors: int = 3, seed: int = 0,
                     limit: int | None = None) -> list[dict]:
    """Arithmetic problems as multiple choice; distractors are near misses (off by 1, 2, 10 or 100, >= 0)."""
    items = []
    for r in read_jsonl(path, limit):
        rng = random.Random(f"{seed}-{r['id']}")
        answer = int(r["answer"])
        near = sorted({answer + d for d in (-100, -10, -2, -1, 1, 2, 10, 100) if answer + d >= 0})
        choices = [str(answer), *(str(v) for v in rng.sample(near, n_distractors))]
        rng.shuffle(choices)
        items.append({"id": r["id"], "question": r["problem"], "choices": choices, "label": choices.index(str(answer))})
    return items


def multiple_choice(scorer: Scorer, items: list[dict], template: str = QA_TEMPLATE) -> dict:
    """acc (summed log-likelihood) and acc_norm (per character) of ranking each item's choices; `chance` for scale."""
    pairs, owners = [], []
    for i, item in enumerate(items):
        context = template.format(question=item["question"])
        for choice in item["choices"]:
            pairs.append((context, " " + choice))
            owners.append(i)
    scores = scorer.loglikelihood(pairs)
    per_item: list[list[tuple[float, int]]] = [[] for _ in items]
    for (_, cont), (lp, _), i in zip(pairs, scores, owners):
        per_item[i].append((lp, len(cont) - 1))  # characters of the choice, without the leading space
    correct = correct_norm = 0
    for item, sc in zip(items, per_item):
        correct += max(range(len(sc)), key=lambda k: sc[k][0]) == item["label"]
        correct_norm += max(range(len(sc)), key=lambda k: sc[k][0] / sc[k][1]) == item["label"]
    n = max(1, len(items))
    return {"acc": correct / n, "acc_norm": correct_norm / n, "n": len(items),
            "chance": sum(1 / len(it["choices"]) for it in items) / n}


def run_tinyweb_tasks(scorer: Scorer, evals: str | Path, tasks: tuple[str, ...] = TASKS,
                      limit: int | None = None) -> dict:
    """Each requested TinyWeb task's metrics, keyed by task name."""
    d = evals_dir(evals)
    out = {}
    for task in tasks:
        if task == "validation":
            out[task] = validation_text(scorer, d / "validation.jsonl", limit)
        elif task == "world_qa":
            out[task] = multiple_choice(scorer, world_qa_items(d / "world_qa.jsonl", limit=limit))
        elif task == "arithmetic":
            out[task] = multiple_choice(scorer, arithmetic_items(d / "arithmetic.jsonl", limit=limit))
        else:
            raise ValueError(f"unknown TinyWeb task {task!r}; known: {', '.join(TASKS)}")
    return out
