"""Fact probes: how strongly a model completes a prompt with a known answer (log-likelihood and greedy match).

A probe is {"prompt": "The Zorbex project's codename is", "answer": " Quillfeather", "distractors": [...]}.
Continued pre-training on a company's documents should raise the answer's likelihood and rank it above the
distractors (other plausible completions); the same probes before and after measure it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def probe(model: nn.Module, tokenizer, prompt: str, answer: str) -> dict:
    """{"logprob": Σ log p(answer tokens | prompt) in nats, "tokens": answer length, "greedy": exact greedy match}."""
    p_ids = tokenizer.encode(prompt)
    full = tokenizer.encode(prompt + answer)
    if full[:len(p_ids)] != p_ids:  # the boundary token merged across prompt and answer: score the joint string
        p_ids = full[:max(1, len(p_ids) - 1)]
    a_ids = full[len(p_ids):]
    if not p_ids or not a_ids:
        raise ValueError(f"probe needs a non-empty prompt and answer, got {prompt!r} / {answer!r}")
    x = torch.tensor([full[:-1]])
    logp = F.log_softmax(model(x)[0].float(), dim=-1)  # (L-1, V): position t predicts full[t+1]
    rows = torch.arange(len(p_ids) - 1, len(full) - 1)
    target = torch.tensor(a_ids)
    return {"logprob": float(logp[rows, target].sum()), "tokens": len(a_ids),
            "greedy": bool((logp[rows].argmax(-1) == target).all())}


def score_probes(model: nn.Module, tokenizer, probes: Sequence[dict]) -> dict:
    """Mean answer log-likelihood (nats), mean per answer token, and greedy exact-match accuracy over probes."""
    if not probes:
        return {}
    was = model.training
    model.eval()
    results = [probe(model, tokenizer, p["prompt"], p["answer"]) for p in probes]
    ranked = []  # probes with distractors: is the true answer the most likely completion of them all?
    for p, r in zip(probes, results):
        if p.get("distractors"):
            others = [probe(model, tokenizer, p["prompt"], d)["logprob"] for d in p["distractors"]]
            ranked.append(r["logprob"] > max(others))
    model.train(was)
    n_tok = sum(r["tokens"] for r in results)
    out = {"probe_logprob": sum(r["logprob"] for r in results) / len(results),
           "probe_logprob_per_token": sum(r["logprob"] for r in results) / n_tok,
           "probe_greedy_acc": sum(r["greedy"] for r in results) / len(results), "probes": len(results)}
    if ranked:
        out["probe_rank_acc"] = sum(ranked) / len(ranked)
    return out
