"""convert and recipes: the right Linears are swapped, first/last blocks stay high, recipes validate."""

import pytest
import torch
from torch import nn

from hytron.config import ConfigError
from hytron.lowp import (
    RECIPE_NAMES,
    PrecisionRecipe,
    QuantLinear,
    QuantSpec,
    convert,
    load_precision_state,
    precision_state,
    precision_summary,
    quant_linears,
    set_high_precision,
)
from hytron.model import HybridConfig, HybridLM


class Stack(nn.Module):
    """A residual stack of MLP blocks, plus an embedding and a head outside the blocks."""

    def __init__(self, n=4, d=32):
        super().__init__()
        self.embed = nn.Embedding(50, d)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 2 * d, bias=False), nn.ReLU(), nn.Linear(2 * d, d)) for _ in range(n))
        self.head = nn.Linear(d, 50, bias=False)

    def forward(self, ids):
        h = self.embed(ids)
        for block in self.layers:
            h = h + block(h)
        return self.head(h)


def quantized_blocks(model, blocks):
    return [i for i, b in enumerate(blocks) if any(isinstance(m, QuantLinear) for m in b.modules())]


def test_named_recipes_exist_and_validate():
    assert set(RECIPE_NAMES) >= {"bf16", "fp8", "mxfp8", "mxfp4", "nvfp4", "nvfp4-no-rht", "nvfp4-no-sr",
                                 "nvfp4-1d-weights", "nvfp4-all-layers"}
    r = PrecisionRecipe.from_name("nvfp4")
    assert r.weight == QuantSpec("nvfp4", (16, 16)) and r.activation == QuantSpec("nvfp4", (1, 16))
    assert r.gradient.rounding == "sr" and r.wgrad_rht and r.keep_last >= 1
    assert not PrecisionRecipe.from_name("nvfp4-no-rht").wgrad_rht
    assert PrecisionRecipe.from_name("nvfp4-no-sr").gradient.rounding == "rne"
    assert PrecisionRecipe.from_name("nvfp4-1d-weights").weight.block == (1, 16)
    assert PrecisionRecipe.from_name("nvfp4-all-layers").keep_last == 0
    fp8 = PrecisionRecipe.from_name("fp8")
    assert (fp8.weight.fmt, fp8.activation.fmt, fp8.gradient.fmt) == ("e4m3", "e4m3", "e5m2")
    assert PrecisionRecipe.from_name("nvfp4", keep_first=2).keep_first == 2
    with pytest.raises(ConfigError, match="unknown precision recipe 'nvfp3'"):
        PrecisionRecipe.from_name("nvfp3")


@pytest.mark.parametrize("bad,match", [
    (dict(weight=QuantSpec("nvfp4", (1, 16), rounding="sr")), "weights use RNE"),
    (dict(keep_last=-1), "keep_last"),
    (dict(high_precision_from=1.5), "high_precision_from"),
    (dict(rht_size=12), "rht_size"),
    (dict(wgrad_rht=True), "RHT only makes sense"),
])
def test_recipe_errors_name_the_field(bad, match):
    with pytest.raises(ConfigError, match=match):
        PrecisionRecipe(**bad)


@pytest.mark.parametrize("kwargs,match", [
    (dict(fmt="nvfp4", block=(1, 32)), "NVFP4 needs"), (dict(fmt="mxfp4"), "MX blocks"),
    (dict(fmt="e4m3", block=(1, 16)), "has no blocks"), (dict(fmt="bf16", rounding="sr"), "stochastic"),
    (dict(fmt="nvfp4", block=(1, 16), scaling="delayed"), "delayed"), (dict(fmt="int8"), "unknown format"),
])
def test_quant_spec_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        QuantSpec(**kwargs)


def test_recipe_from_yaml_mapping():
    r = PrecisionRecipe.from_dict({"recipe": "nvfp4", "keep_first": 1, "high_precision_from": 0.8})
    assert r.name == "nvfp4" and r.keep_first == 1
    assert r.should_switch(80, 100) and not r.should_switch(79, 100)
    custom = PrecisionRecipe.from_dict({"name": "w-only", "weight": {"fmt": "nvfp4", "block": [16, 16]}})
    assert custom.weight.block == (16, 16) and custom.activation.identity
    with pytest.raises(ConfigError, match="keep_lats"):
        PrecisionRecipe.from_dict({"recipe": "nvfp4", "keep_lats": 2})


def test_convert_swaps_block_linears_and_keeps_first_last_blocks():
    model = Stack(n=5)
    ids = torch.randint(0, 50, (2, 16))
    before = model(ids)
    keys = list(model.state_dict())
    convert(model, PrecisionRecipe.from_name("nvfp4", keep_first=1, keep_last=2))
    assert quantized_blocks(model, model.layers) == [1, 2]
    assert type(model.head) is nn.Linear and type(model.embed) is nn.Embedding
    assert list(model.state_dict()) == keys
    assert precision_summary(model) == {"quantized": 4, "high_precision": 7}
    after = model(ids)
    assert not torch.equal(before, after) and torch.allclose(before, after, atol=0.2)
    with pytest.raises(ValueError, match="already has QuantLinear"):
        convert(model, "nvfp4")


def test_convert_full_precision_is_a_no_op_and_errors_are_clear():
    model = Stack()
    assert convert(model, "fp32") is model and not list(quant_linears(model))
    with pytest.raises(ValueError, match="only|has 4 blocks"):
        convert(Stack(n=4), PrecisionRecipe.from_name("nvfp4", keep_first=2, keep_last=2))
    with pytest.raises(ValueError, match="no block list"):
        convert(nn.Sequential(nn.Linear(4, 4)), "fp8")


def test_set_high_precision_switches_every_converted_layer():
    model = convert(Stack(), "nvfp4")
    assert set_high_precision(model, True) == 6
    assert all(m.hp_forward and not m.hp_backward for _, m in quant_linears(model))
    set_high_precision(model, True, passes="all")
    assert all(m.hp_backward for _, m in quant_linears(model))
    set_high_precision(model, False)
    assert precision_summary(model)["quantized"] == 6
    with pytest.raises(ValueError, match="passes"):
        set_high_precision(model, True, passes="backward")


def test_convert_hybrid_lm_leaves_ssm_norm_embedding_head_in_high_precision():
    torch.manual_seed(0)
    cfg = HybridConfig.from_name("hytron-tiny")
    ref = HybridLM(cfg)
    model = HybridLM(cfg)
    model.load_state_dict(ref.state_dict())
    convert(model, PrecisionRecipe.from_name("nvfp4"))  # keep_last=1
    n = len(model.backbone.layers)
    assert quantized_blocks(model, model.backbone.layers) == list(range(n - 1))
    converted = {name for name, _ in quant_linears(model)}
    assert "backbone.layers.0.mixer.in_proj" in converted and "backbone.layers.3.mixer.q_proj" in converted
    assert not any(name.startswith(f"backbone.layers.{n - 1}.") for name in converted)
    assert type(model.lm_head) is nn.Linear
    ids = torch.randint(0, cfg.vocab_size, (2, 32))
    loss_fn = lambda m: nn.functional.cross_entropy(m(ids).flatten(0, 1), ids.roll(-1, 1).flatten())
    lq, lr = loss_fn(model), loss_fn(ref)
    assert torch.isfinite(lq) and abs(lq.item() - lr.item()) < 0.05 * lr.item()
    lq.backward()
    lr.backward()
    for name, p in model.named_parameters():  # SSM, conv, norm, embedding params all still get gradients
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # converted projection grads are quantized, yet point the same way as the fp32 ones
    g = model.backbone.layers[0].mixer.in_proj.weight.grad
    gr = ref.backbone.layers[0].mixer.in_proj.weight.grad
    assert not torch.equal(g, gr) and nn.functional.cosine_similarity(g.flatten(), gr.flatten(), 0) > 0.8


def test_convert_hybrid_moe_leaves_router_and_expert_tensors_alone():
    model = HybridLM(HybridConfig.from_name("hytron-tiny-moe"))
    convert(model, PrecisionRecipe.from_name("nvfp4-all-layers"))
    names = {name for name, _ in quant_linears(model)}
    assert any("shared_experts" in n for n in names)
    assert not any("gate" in n or "router" in n for n in names)
    ids = torch.randint(0, 100, (1, 16))
    model(ids).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "experts.up_proj" in n)


@pytest.mark.parametrize("name", ["nvfp4", "fp8-delayed"])
def test_precision_state_resumes_bit_exactly(name):
    def make():
        torch.manual_seed(0)
        return convert(Stack(), name)

    ids = torch.randint(0, 50, (2, 32))

    def step(model):
        model.zero_grad()
        model(ids).square().mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.01 * p.grad
        return [p.grad.clone() for p in model.parameters()]

    a = make()
    for _ in range(3):
        step(a)
    saved_params, saved = {k: v.clone() for k, v in a.state_dict().items()}, precision_state(a)
    expected = step(a)
    b = make()
    b.load_state_dict(saved_params)
    load_precision_state(b, saved)
    got = step(b)
    assert all(torch.equal(x, y) for x, y in zip(expected, got))
    fresh = make()
    fresh.load_state_dict(saved_params)
    assert not all(torch.equal(x, y) for x, y in zip(expected, step(fresh)))  # the state mattered
    with pytest.raises(ValueError, match="does not match"):
        load_precision_state(convert(Stack(n=5), name), saved)


def test_a_checkpoint_resumes_across_fp32_and_bf16_kept_blocks():
    """A kept block is plain fp32 Linears (GPU, or a CPU checkpoint from before) or bf16 QuantLinears (CPU now):
    neither has state, so the SR streams of the quantized blocks resume either way; a real mismatch still fails."""
    def make(high_precision):
        torch.manual_seed(0)
        return convert(Stack(), PrecisionRecipe.from_name("nvfp4", high_precision=high_precision))

    fp32_kept, bf16_kept = make("fp32"), make("bf16")
    assert len(dict(quant_linears(bf16_kept))) > len(dict(quant_linears(fp32_kept)))
    ids = torch.randint(0, 50, (2, 32))
    fp32_kept(ids).square().mean().backward()  # draws from the SR generators
    saved = precision_state(fp32_kept)
    load_precision_state(bf16_kept, saved)  # the kept block's bf16 layers have nothing to restore
    name = next(iter(saved))
    got = dict(quant_linears(bf16_kept))[name].precision_state()["generators"]["cpu"]
    assert torch.equal(got, saved[name]["generators"]["cpu"])
    load_precision_state(make("fp32"), precision_state(bf16_kept))  # and back
    with pytest.raises(ValueError, match="does not match"):
        load_precision_state(make("bf16"), {k: v for k, v in saved.items() if k != name})  # an SR layer missing
