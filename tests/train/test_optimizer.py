"""make_optimizer: torch's fused AdamW where it applies, the same updates as the for-loop AdamW."""

import copy

import torch

from hytron.model import HybridConfig, HybridLM
from hytron.train.loop import fused_adamw_ok, make_optimizer
from hytron.train.recipe import OptimSpec


def test_cpu_model_gets_fused_adamw_with_the_for_loop_updates():
    torch.manual_seed(0)
    model = HybridLM(HybridConfig.from_name("hytron-tiny"))
    twin = copy.deepcopy(model)
    o = OptimSpec()
    fused = make_optimizer(model, o)
    assert fused.defaults["fused"] is True
    loop = torch.optim.AdamW(twin.param_groups(o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                             foreach=False)
    ids = torch.randint(0, model.config.vocab_size, (2, 17))
    for _ in range(3):
        for m, opt in ((model, fused), (twin, loop)):
            opt.zero_grad()
            m.loss(ids[:, :-1], ids[:, 1:]).backward()
            opt.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
    # every step moves each parameter's version counter, as the for-loop's in-place updates do (QuantLinear
    # re-quantizes a weight when its version moves; the fused kernel alone leaves the counters where they were)
    before = [p._version for p in model.parameters()]
    fused.step()
    assert all(p._version > v for p, v in zip(model.parameters(), before))


def test_fused_adamw_is_refused_where_it_does_not_apply():
    assert fused_adamw_ok([torch.nn.Parameter(torch.zeros(3)), torch.zeros(2, dtype=torch.bfloat16)])
    assert not fused_adamw_ok([])
    assert not fused_adamw_ok([torch.zeros(3, dtype=torch.int64)])
    assert not fused_adamw_ok([torch.zeros(3), torch.zeros(3, device="meta")])

    class Sub(torch.Tensor):  # stands for DTensor and other subclasses (FSDP's sharded parameters)
        pass

    assert not fused_adamw_ok([torch.zeros(3).as_subclass(Sub)])
