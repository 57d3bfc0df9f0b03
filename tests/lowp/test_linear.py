"""QuantLinear: identity is nn.Linear bit for bit; each GEMM uses the recipe's operands; weights cached."""

import pytest
import torch
from torch import nn

from hytron.lowp import PrecisionRecipe, Quantized, QuantLinear, QuantSpec, fake_quantize, rht, rht_matrix

IDENTITY = PrecisionRecipe(name="identity")


def pair(recipe, in_f=48, out_f=40, bias=True, dtype=torch.float32):
    ref = nn.Linear(in_f, out_f, bias=bias, dtype=dtype)
    q = QuantLinear.from_linear(nn.Linear(in_f, out_f, bias=bias, dtype=dtype), recipe)
    q.load_state_dict(ref.state_dict())
    return ref, q


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_identity_quantizers_equal_nn_linear_exactly(dtype, bias):
    ref, q = pair(IDENTITY, bias=bias, dtype=dtype)
    x = torch.randn(3, 37, 48, dtype=dtype)
    xr, xq = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yq = ref(xr), q(xq)
    assert yq.dtype == yr.dtype and torch.equal(yr, yq)
    g = torch.randn_like(yr)
    yr.backward(g)
    yq.backward(g)
    assert torch.equal(xr.grad, xq.grad)
    assert torch.equal(ref.weight.grad, q.weight.grad)
    if bias:
        assert torch.equal(ref.bias.grad, q.bias.grad)


def test_from_linear_shares_parameters_and_state_dict_keys():
    lin = nn.Linear(32, 16)
    q = QuantLinear.from_linear(lin, PrecisionRecipe.from_name("nvfp4"))
    assert q.weight is lin.weight and q.bias is lin.bias
    assert list(q.state_dict()) == list(lin.state_dict())
    assert "recipe=nvfp4" in repr(q)


def manual_nvfp4(x, w, dy, recipe, g_dgrad, g_wgrad):
    """The three GEMMs written out from fake_quantize (lowprec.md §3.6), with replayed SR generators."""
    wq_fwd = fake_quantize(w, "nvfp4", block=recipe.weight.block)
    wq_dgrad = fake_quantize(w.t(), "nvfp4", block=recipe.weight.block).t()
    y = fake_quantize(x, "nvfp4") @ wq_fwd.t()
    dx = fake_quantize(dy, "nvfp4", rounding=recipe.gradient.rounding, generator=g_dgrad) @ wq_dgrad
    dyt, xt = dy.t(), x.t()
    if recipe.wgrad_rht:
        r = rht_matrix()
        dyt, xt = rht(dyt, r), rht(xt, r)
    dw = fake_quantize(dyt, "nvfp4", rounding=recipe.gradient.rounding, generator=g_wgrad) @ fake_quantize(
        xt, "nvfp4").t()
    return y, dx, dw


@pytest.mark.parametrize("name", ["nvfp4", "nvfp4-no-rht", "nvfp4-no-sr", "nvfp4-1d-weights"])
def test_nvfp4_gemms_use_the_recipes_operands(name):
    recipe = PrecisionRecipe.from_name(name)
    _, q = pair(recipe, 64, 48, bias=False)
    x = torch.randn(40, 64, requires_grad=True)
    y = q(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    seed = recipe.seed * 1_000_003 + q.layer_index  # the layer's SR stream, replayed: dgrad draws first
    g = torch.Generator().manual_seed(seed)
    y_ref, dx_ref, dw_ref = manual_nvfp4(x.detach(), q.weight.detach(), dy, recipe, g, g)
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(x.grad, dx_ref, rtol=1e-5, atol=1e-6)  # same values, fp32 sum order may differ
    torch.testing.assert_close(q.weight.grad, dw_ref, rtol=1e-5, atol=1e-6)
    # and the quantization is real: forward differs from fp32
    assert not torch.allclose(y, x.detach() @ q.weight.detach().t(), atol=1e-3)


def test_2d_weights_give_one_quantized_weight_for_forward_and_backward():
    _, q = pair(PrecisionRecipe.from_name("nvfp4"), 64, 48)
    fwd, dgrad = q.quantized_weight("fprop"), q.quantized_weight("dgrad")
    assert torch.equal(fwd, dgrad.t())
    _, q1 = pair(PrecisionRecipe.from_name("nvfp4-1d-weights"), 64, 48)
    assert not torch.equal(q1.quantized_weight("fprop"), q1.quantized_weight("dgrad").t())


def test_weights_are_quantized_once_per_optimizer_step():
    _, q = pair(PrecisionRecipe.from_name("nvfp4-1d-weights"), 64, 48)
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    for step in range(2):
        for _micro in range(3):  # gradient accumulation: three forward+backward on one weight
            q(torch.randn(16, 64)).square().mean().backward()
        assert q.weight_quantizations == step + 1
        opt.step()
        opt.zero_grad()
    before = q.quantized_weight("fprop").clone()
    with torch.no_grad():
        q.weight.mul_(2)  # any in-place change invalidates the cache
    assert not torch.equal(before, q.quantized_weight("fprop"))
    assert q.weight_quantizations == 4  # 2 steps, the weight after the last step, after mul_


def test_stochastic_rounding_streams_are_seeded_and_fresh_each_backward():
    recipe = PrecisionRecipe.from_name("nvfp4")
    x, dy = torch.randn(32, 64), torch.randn(32, 48)
    grads = []
    for _ in range(2):
        _, q = pair(recipe, 64, 48, bias=False)
        with torch.no_grad():
            q.weight.copy_(torch.ones(48, 64))
        xs = x.clone().requires_grad_()
        q(xs).backward(dy)
        first = xs.grad.clone()
        xs.grad = None
        q(xs).backward(dy)
        grads.append((first, xs.grad))
    assert torch.equal(grads[0][0], grads[1][0])  # same seed, same draws
    assert not torch.equal(grads[0][0], grads[0][1])  # a new draw on the next backward


def test_high_precision_switch_forward_and_all():
    ref, q = pair(PrecisionRecipe.from_name("nvfp4"), 64, 48)
    x = torch.randn(16, 64)
    assert not torch.equal(q(x), ref(x))
    q.hp_forward = True
    assert torch.equal(q(x), ref(x))
    xr, xq = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref(xr).sum().backward()
    q(xq).sum().backward()
    assert not torch.equal(xr.grad, xq.grad)  # backward still quantized
    q.hp_backward = True
    xq.grad = xr.grad = None
    q.weight.grad = None
    ref.weight.grad = None
    ref(xr).sum().backward()
    q(xq).sum().backward()
    torch.testing.assert_close(q.weight.grad, ref.weight.grad)
    torch.testing.assert_close(xq.grad, xr.grad)


@pytest.mark.parametrize("name", ["bf16", "fp8", "fp8-delayed", "mxfp8", "mxfp4", "nvfp4"])
def test_every_recipe_trains_a_linear_regression(name):
    torch.manual_seed(0)
    target = torch.randn(32, 64) / 8
    _, q = pair(PrecisionRecipe.from_name(name), 64, 32, bias=False)
    opt = torch.optim.Adam(q.parameters(), lr=3e-2)
    losses = []
    for _ in range(60):
        x = torch.randn(64, 64)
        loss = (q(x) - x @ target.t()).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.15 * losses[0], (name, losses[0], losses[-1])


def test_activation_sr_wgrad_is_unbiased_through_the_layer():
    # with SR on both wgrad operands the layer's weight gradient is an unbiased estimate of dyᵀ x
    recipe = PrecisionRecipe(name="sr-both", weight=QuantSpec("nvfp4", (16, 16)),
                             activation=QuantSpec("nvfp4", (1, 16), rounding="sr"),
                             gradient=QuantSpec("nvfp4", (1, 16), rounding="sr"), wgrad_rht=True)
    _, q = pair(recipe, 32, 16, bias=False)
    x, dy = torch.randn(48, 32), torch.randn(48, 16)
    exact = dy.t() @ x
    total = torch.zeros_like(exact)
    for _ in range(100):
        q.weight.grad = None
        q(x).backward(dy)
        total += q.weight.grad
    one = (q.weight.grad - exact).norm() / exact.norm()
    assert (total / 100 - exact).norm() / exact.norm() < one / 4  # ~1/10 if unbiased


@pytest.mark.skipif(not torch.cuda.is_available(), reason="native FP8 GEMMs need a CUDA GPU")
def test_native_fp8_matches_emulation_on_cuda():
    from hytron.lowp.native import scaled_mm_available

    if not scaled_mm_available(torch.device("cuda")):
        pytest.skip("GPU has no FP8 tensor cores (needs sm_89+)")
    torch.manual_seed(0)
    lin = nn.Linear(64, 48, bias=False).cuda()
    native = QuantLinear.from_linear(lin, PrecisionRecipe.from_name("fp8"))
    emulated = QuantLinear.from_linear(lin, PrecisionRecipe.from_name("fp8", native_fp8=False))
    x = torch.randn(32, 64, device="cuda")
    torch.testing.assert_close(native(x), emulated(x), rtol=1e-3, atol=1e-3)


def test_emulated_gemms_ignore_bf16_autocast():
    # the training loop autocasts to bf16 on GPUs; the emulated GEMM must still multiply exact fp32 values
    _, q = pair(PrecisionRecipe.from_name("nvfp4"), 64, 48, bias=False)
    x = torch.randn(32, 64)
    plain = q(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = q(x)
    assert under_autocast.dtype == torch.float32 and torch.equal(plain, under_autocast)


@pytest.mark.parametrize("name", ["fp8", "fp8-delayed"])
def test_native_fp8_plumbing_matches_emulation(monkeypatch, name):
    # the CUDA branch keeps Quantized operands (for torch._scaled_mm); run it on CPU, where its GEMM
    # falls back to dequantize + matmul, and check its transposes/scales give the emulated results exactly
    x, dy = torch.randn(32, 64), torch.randn(32, 48)
    runs = []
    for native in (False, True):
        torch.manual_seed(0)
        lin = nn.Linear(64, 48, bias=False)
        q = QuantLinear.from_linear(lin, PrecisionRecipe.from_name(name))
        monkeypatch.setattr(QuantLinear, "_native", lambda self, device, on=native: on)
        xs = x.clone().requires_grad_()
        for _ in range(2):  # twice, so delayed scaling uses a non-empty history
            xs.grad, q.weight.grad = None, None
            y = q(xs)
            y.backward(dy)
        assert isinstance(q.quantized_weight("fprop"), Quantized) == native
        runs.append((y, xs.grad, q.weight.grad))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
