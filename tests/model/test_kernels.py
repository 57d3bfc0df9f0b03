"""Optional fast paths agree with the plain-PyTorch reference; the CPU path never loads CUDA kernels."""

import sys

import pytest
import torch

from hytron.model import kernels
from hytron.model.ssd import ssd_chunked
from tests.conftest import tiny_model


def test_cpu_forward_never_imports_cuda_kernel_packages(tiny):
    with torch.no_grad():
        tiny(torch.randint(0, 512, (1, 20)))
    assert "mamba_ssm" not in sys.modules and "causal_conv1d" not in sys.modules
    assert kernels.fast_scan(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2), torch.zeros(2),
                             torch.zeros(1, 4, 1, 2), torch.zeros(1, 4, 1, 2), 4, None) is None


@pytest.fixture
def scan_backend():
    previous = kernels.scan_backend()
    yield kernels.set_scan_backend
    kernels.set_scan_backend(previous)


def test_unknown_scan_backend_is_refused_by_name(scan_backend):
    with pytest.raises(ValueError, match="'triton9'"):
        scan_backend("triton9")
    if not kernels.kernels_available()["mamba_ssm"]:
        with pytest.raises(RuntimeError, match="mamba-ssm"):
            scan_backend("mamba_ssm")


@pytest.mark.slow
def test_torch_compiled_scan_matches_reference_forward_and_backward(scan_backend):
    """The `compile` backend (what a GPU without mamba-ssm uses) through the same interface as the model."""
    g = torch.Generator().manual_seed(0)
    b, L, H, P, G, N = 2, 40, 4, 8, 2, 8
    x, B, C = torch.randn(b, L, H, P, generator=g), torch.randn(b, L, G, N, generator=g), torch.randn(
        b, L, G, N, generator=g)
    dt, A = torch.rand(b, L, H, generator=g), -torch.rand(H, generator=g)
    h0 = torch.randn(b, H, P, N, generator=g)
    x.requires_grad_(True)
    scan_backend("compile")
    y, s = kernels.fast_scan(x, dt, A, B, C, 16, h0)
    (gx,) = torch.autograd.grad(y.square().sum() + s.sum(), x)
    y_ref, s_ref = ssd_chunked(x, dt, A, B, C, 16, h0)
    (gx_ref,) = torch.autograd.grad(y_ref.square().sum() + s_ref.sum(), x)
    assert torch.allclose(y, y_ref, atol=1e-5) and torch.allclose(s, s_ref, atol=1e-5)
    assert torch.allclose(gx, gx_ref, atol=1e-4)


@pytest.mark.parametrize("preset", ["hytron-tiny", "hytron-tiny-moe"])
def test_static_decode_step_equals_model_decode(preset):
    """decode_step (what the CUDA graph captures) gives the model's cached-decode logits, rows of unequal
    lengths included, and leaves the cache in the same state."""
    m = tiny_model(preset)
    V = m.config.vocab_size
    prompts = [torch.randint(3, V, (1, n)) for n in (5, 19, 33)]
    caches = []
    for _ in range(2):
        batch = m.new_cache(3, capacity=64)
        for r, p in enumerate(prompts):
            one = m.new_cache(1, capacity=64)
            with torch.no_grad():
                m(p, one)
            batch.insert(r, one)
        caches.append(batch)
    ref_cache, static_cache = caches
    tok = torch.randint(3, V, (3, 1))
    for _ in range(4):
        with torch.no_grad():
            ref = m(tok, ref_cache)[:, -1]
        out = kernels.decode_step(m, static_cache, tok)
        assert (out - ref).abs().max() < 1e-5
        tok = ref.argmax(-1, keepdim=True)
    assert torch.equal(static_cache.lengths, ref_cache.lengths)
    for a, b in zip(static_cache.layers, ref_cache.layers):
        if a is not None:
            for t_a, t_b in zip(vars(a).values(), vars(b).values()):  # conv/ssm or k/v, same capacity
                assert torch.allclose(t_a, t_b, atol=1e-5)


def test_graphed_decoder_refuses_to_run_past_the_cache_capacity():
    m = tiny_model()
    cache = m.new_cache(2, capacity=16)
    with torch.no_grad():
        m(torch.randint(3, 512, (2, 14)), cache)
    dec = kernels.GraphedDecoder(m, cache)
    tok = torch.zeros(2, 1, dtype=torch.long)
    dec.step(tok)
    dec.step(tok)
    with pytest.raises(RuntimeError, match="capacity 16"):
        dec.step(tok)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernels_match_reference_model():
    if not any(kernels.kernels_available().values()):
        pytest.skip("mamba-ssm / causal-conv1d not installed")
    m = tiny_model("hytron-tiny").cuda()
    ids = torch.randint(0, 512, (2, 50), device="cuda")
    with torch.no_grad():
        fast = m(ids)
        kernels._mamba_ssm_scan.cache_clear()
        kernels._causal_conv1d.cache_clear()
    ref_model = tiny_model("hytron-tiny")
    ref_model.load_state_dict({k: v.cpu() for k, v in m.state_dict().items()})
    with torch.no_grad():
        ref = ref_model(ids.cpu())
    assert (fast.cpu() - ref).abs().max() < 1e-3
