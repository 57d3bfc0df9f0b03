"""Knowledge distillation loss: forward KL from the teacher's top-k next-token distribution, with temperature.

For each position the teacher's k largest logits define p = softmax(z_T[topk] / τ) (renormalised over the
k tokens); the student's log-probabilities log q = log_softmax(z_S / τ) are over the *whole* vocabulary and
read at the same k tokens. The loss is τ² · Σ_k p_k (log p_k − log q_k) (Hinton et al., arXiv 1503.02531,
for τ² keeping gradient scale). Because q is normalised over all tokens, Σ_k q_k ≤ 1 and the loss equals
KL(p ‖ q|topk renormalised) − log Σ_k q_k ≥ 0: it is zero only when the student puts exactly the teacher's
top-k shape on those tokens and nothing elsewhere. Keeping only k logits per position is what makes storing
or streaming teacher outputs cheap; with k = vocab size this is ordinary forward-KL logit distillation as used
for Minitron (arXiv 2407.14679).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def teacher_topk(teacher_logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values, indices), each (..., k): the teacher's k largest logits per position, in fp32."""
    k = min(k, teacher_logits.size(-1))
    values, indices = teacher_logits.float().topk(k, dim=-1)
    return values, indices


def topk_kl(student_logits: Tensor, topk_values: Tensor, topk_indices: Tensor, temperature: float = 1.0,
            mask: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Forward KL(teacher top-k ‖ student) per position, times τ².

    student_logits (..., V); topk_values/indices (..., k) from `teacher_topk`; mask (...) bool selects the
    positions that count. reduction "mean" (over counted positions), "sum" or "none" (per position).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, topk_indices)  # (..., k)
    log_p = F.log_softmax(topk_values / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2  # (...)
    if mask is not None:
        kl = kl * mask.to(kl.dtype)
    if reduction == "none":
        return kl
    if reduction == "sum":
        return kl.sum()
    count = mask.sum() if mask is not None else torch.tensor(kl.numel())
    return kl.sum() / count.clamp(min=1)


def distill_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, mask: Tensor, *, k: int = 64,
                 temperature: float = 1.0, alpha: float = 1.0) -> tuple[Tensor, dict]:
    """alpha · topk_kl + (1 − alpha) · cross-entropy on the data's targets, both over `mask`; and the parts."""
    values, indices = teacher_topk(teacher_logits, k)
    kd = topk_kl(student_logits, values, indices, temperature, mask)
    ce = (F.cross_entropy(student_logits.float().flatten(0, -2), targets.flatten(), reduction="none")
          * mask.flatten()).sum() / mask.sum().clamp(min=1)
    loss = alpha * kd + (1 - alpha) * ce if alpha < 1 else kd
    return loss, {"kd": float(kd.detach()), "ce": float(ce.detach())}
