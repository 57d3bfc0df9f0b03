"""The MTP head through training stages: which depths a stage trains, and how well the head drafts before and after.

A model's MTP head drafts for speculative decoding only as long as it predicts what the model itself will say.
Fine-tune the model and leave the head alone (what vLLM, peft and TRL do: they skip `mtp.*`) and the drafts are
the old model's, so acceptance falls. Stages that start from a model with a head therefore keep it fresh unless
`model.mtp.refresh` is false: pre-training and SFT train it with pre-training's MTP loss (`mtp_depths`), LoRA
distils it from the adapted model afterwards (`hytron.tune.mtp_refresh`). `acceptance` measures the result the
way serving sees it: greedy speculative decoding on held-out prompts (`hytron.infer.speculative_acceptance`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from hytron.infer import speculative_acceptance
from hytron.train.recipe import MTPSpec

REFRESH_DEPTHS = 2  # depths a refreshed head trains when model.mtp.depths is 0 (Super's recipe: 2, one block)
ACCEPT_K, ACCEPT_PROMPTS, ACCEPT_TOKENS, PROMPT_LEN = 3, 8, 32, 16  # the acceptance measurement's shape


def mtp_depths(spec: MTPSpec, model) -> int:
    """The MTP depths a full-weight stage trains: `spec.depths` when set, else `REFRESH_DEPTHS` for a model that
    already has a head (unless `spec.refresh` is false), else 0 (no MTP loss)."""
    if spec.depths:
        return spec.depths
    return REFRESH_DEPTHS if model.mtp is not None and spec.refresh else 0


def heldout_prompts(batches: Iterable, n: int = ACCEPT_PROMPTS, length: int = PROMPT_LEN) -> list[list[int]]:
    """Up to `n` prompts from held-out batches of (inputs, targets[, loss_mask]): each row up to its first trained
    target (a chat row: everything before the assistant's answer), and at least its first `length` tokens (packed
    text, where every target trains), never past the row's last trained target (right padding)."""
    prompts: list[list[int]] = []
    for batch in batches:
        x = batch[0]
        mask = batch[2] if len(batch) > 2 else None
        for r in range(x.size(0)):
            if mask is None:
                first, end = 0, x.size(1)
            else:
                trained = mask[r].nonzero().flatten()
                if trained.numel() == 0:
                    continue
                first, end = int(trained[0]), int(trained[-1]) + 1
            prompts.append(x[r, :min(max(first + 1, length), end)].tolist())
            if len(prompts) == n:
                return prompts
    return prompts


def acceptance(model, prompts: list[list[int]]) -> dict | None:
    """`speculative_acceptance` in this module's shape (K=3, 32 new tokens per prompt); None without a head or
    prompts."""
    if model.mtp is None or not prompts:
        return None
    return speculative_acceptance(model, prompts, k=ACCEPT_K, max_tokens=ACCEPT_TOKENS)


def report(before: dict | None, after: dict | None, label: str = "mtp") -> dict:
    """{"before": ..., "after": ...} for a run's result JSON, and one line saying it on stderr."""
    if before is not None and after is not None:
        print(f"[{label}] MTP acceptance length (K={after['k']}, {after['prompts']} held-out prompts): "
              f"{before['mean_accepted_length']:.2f} before -> {after['mean_accepted_length']:.2f} after "
              f"(acceptance rate {before['acceptance_rate']:.0%} -> {after['acceptance_rate']:.0%})",
              file=sys.stderr, flush=True)
    return {"before": before, "after": after}
