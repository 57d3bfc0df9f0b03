"""Learning-rate schedules as pure functions of the step: warmup then warmup-stable-decay, cosine or constant."""

from __future__ import annotations

import math


def lr_at(step: int, *, base_lr: float, total_steps: int, warmup_steps: int, schedule: str = "wsd",
          min_lr_ratio: float = 0.1, decay_fraction: float = 0.2) -> float:
    """LR for optimizer step `step` (0-based).

    - warmup: linear from base_lr/warmup to base_lr over `warmup_steps`;
    - "wsd": constant, then linear decay to min_lr over the last `decay_fraction` of steps (MiniCPM, WSD);
    - "cosine": cosine decay from base_lr to min_lr over the steps after warmup;
    - "constant": base_lr after warmup.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    min_lr = base_lr * min_lr_ratio
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        t = min(1.0, (step - warmup_steps) / span)
        return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))
    if schedule == "wsd":
        start = decay_start(total_steps, decay_fraction)
        decay_steps = total_steps - start
        if step < start:
            return base_lr
        t = min(1.0, (step - start + 1) / decay_steps)
        return base_lr + (min_lr - base_lr) * t
    raise ValueError(f"schedule must be 'wsd', 'cosine' or 'constant', got {schedule!r}")


def decay_start(total_steps: int, decay_fraction: float) -> int:
    """The first step (0-based) of the WSD decay: the last `decay_fraction` of steps, rounded, at least one."""
    return total_steps - max(1, int(round(decay_fraction * total_steps)))
