"""hytron's cross-entropy equals F.cross_entropy in value and gradient, ignored targets included."""

import torch
import torch.nn.functional as F

from hytron.model.loss import cross_entropy


def test_cross_entropy_equals_torch_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(37, 11, generator=g, dtype=torch.float64) * 3).requires_grad_()
    targets = torch.randint(0, 11, (37,), generator=g)
    targets[[3, 7, 8]] = -100
    ref_logits = logits.detach().clone().requires_grad_()
    loss, ref = cross_entropy(logits, targets), F.cross_entropy(ref_logits, targets, ignore_index=-100)
    torch.testing.assert_close(loss, ref, rtol=1e-14, atol=0)
    (loss * 1.7).backward()
    (ref * 1.7).backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-12, atol=1e-15)
    assert logits.grad[3].abs().max() == 0  # an ignored row gets no gradient
    assert torch.autograd.gradcheck(lambda x: cross_entropy(x, targets), (logits.detach().requires_grad_(),))


def test_cross_entropy_custom_ignore_index_and_all_ignored_is_nan_like_torch():
    logits = torch.randn(5, 4)
    t = torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(cross_entropy(logits, t, ignore_index=1), F.cross_entropy(logits, t, ignore_index=1))
    none = torch.full((5,), -100)
    assert torch.isnan(cross_entropy(logits, none)) and torch.isnan(F.cross_entropy(logits, none))
