"""Optional fast paths agree with the plain-PyTorch reference; the CPU path never loads CUDA kernels."""

import os
import subprocess
import sys
from pathlib import Path

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
                if isinstance(t_a, torch.Tensor):  # (a layer cache also holds flags, e.g. speculative tracking)
                    assert torch.allclose(t_a, t_b, atol=1e-5)


def test_static_decoder_refuses_to_run_past_the_cache_capacity():
    m = tiny_model()
    cache = m.new_cache(2, capacity=16)
    with torch.no_grad():
        m(torch.randint(3, 512, (2, 14)), cache)
    dec = kernels.StaticDecoder(m, cache)
    tok = torch.zeros(2, 1, dtype=torch.long)
    dec.step(tok)
    dec.step(tok)
    with pytest.raises(RuntimeError, match="capacity 16"):
        dec.step(tok)
    with pytest.raises(ValueError, match="'cuda-ish'"):
        kernels.StaticDecoder(m, cache, "cuda-ish")


def test_static_decoder_keeps_its_buffers_and_reads_only_the_span_it_needs():
    """The eager static step over a large cache: the model's own decode logits, every state tensor updated in
    place (a compiled step or a CUDA graph depends on that), rows of unequal lengths."""
    m = tiny_model()
    caches = []
    for _ in range(2):
        batch = m.new_cache(2, capacity=256)
        for r, n in enumerate((3, 11)):
            one = m.new_cache(1, capacity=16)
            with torch.no_grad():
                m(torch.arange(3, 3 + n)[None], one)
            batch.insert(r, one)
        caches.append(batch)
    ref_cache, static_cache = caches
    buffers = [t.data_ptr() for s in static_cache.layers if s is not None for t in vars(s).values()
               if isinstance(t, torch.Tensor)]
    dec = kernels.StaticDecoder(m, static_cache)
    tok = torch.tensor([[5], [6]])
    for _ in range(20):
        with torch.no_grad():
            ref = m(tok, ref_cache)[:, -1]
        out = dec.step(tok)
        assert (out - ref).abs().max() < 1e-5
        tok = ref.argmax(-1, keepdim=True)
    assert dec.longest == int(static_cache.lengths.max()) == 31
    assert buffers == [t.data_ptr() for s in static_cache.layers if s is not None for t in vars(s).values()
                       if isinstance(t, torch.Tensor)]


def _prefilled(m, lengths, capacity, dtype=None):
    batch = m.new_cache(len(lengths), capacity=capacity, dtype=dtype)
    for r, n in enumerate(lengths):
        one = m.new_cache(1, capacity=capacity, dtype=dtype)
        with torch.no_grad():
            m(torch.arange(3, 3 + n)[None], one)
        batch.insert(r, one)
    return batch


@pytest.mark.slow
def test_a_compiled_decoder_for_a_new_batch_skips_the_warm_up_but_checks_the_guards_on_its_first_step():
    """Rows join and leave a served batch, and every change builds a decoder over a new cache. The first compiled
    decoder of a model warms up (one guarded step, state restored); later ones take no warm-up step and check
    every guard on their first real step instead, so a model changed in between (here its dtype) recompiles
    rather than running the old graph: every step equals the eager one."""
    torch.manual_seed(0)
    m = tiny_model()
    kernels._WARM.pop(m, None)
    for dtype, lengths, capacity in ((torch.float32, (4, 9, 2), 32), (torch.float32, (7, 3), 64),
                                     (torch.float64, (5, 8, 6, 2), 32)):
        m.to(dtype)
        cache, ref_cache = _prefilled(m, lengths, capacity, dtype), _prefilled(m, lengths, capacity, dtype)
        state = [t.clone() for t in kernels._state_tensors(cache)]
        dec = kernels.StaticDecoder(m, cache, "compile")
        assert dec.check_guards == (capacity == 64 or dtype == torch.float64)  # the 2nd and 3rd: no warm-up
        assert all(torch.equal(a, b) for a, b in zip(state, kernels._state_tensors(cache)))
        tok = torch.arange(5, 5 + len(lengths))[:, None]
        for _ in range(3):
            ref = kernels.decode_step(m, ref_cache, tok)
            out = dec.step(tok)
            assert out.dtype == dtype and (out - ref).abs().max() < 1e-4
            tok = ref.argmax(-1, keepdim=True)
        assert not dec.check_guards
    full = _prefilled(m, (28, 3), 32, torch.float64)  # 4 positions left; compiled, the last stays free
    dec = kernels.StaticDecoder(m, full, "compile")
    for _ in range(3):
        dec.step(torch.tensor([[5], [6]]))
    with pytest.raises(RuntimeError, match="cache is full.*kept free"):  # not "Recompilation triggered"
        dec.step(torch.tensor([[5], [6]]))


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


# Triton reads TRITON_INTERPRET when it is imported (torch.compile may import it earlier in this process), so
# the interpreter checks run in a fresh interpreter process, on CPU tensors.
_TRITON_CHECK = """
import torch
from hytron.model import kernels
from hytron.model.ssd import ssd_step
from tests.conftest import tiny_model

for (b, H, P, N, G) in [(3, 8, 16, 16, 2), (2, 6, 20, 24, 3)]:  # the second needs masked tiles
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(0)
        state = torch.randn(b, H, P, N, generator=g)
        x, dt = torch.randn(b, H, P, generator=g).to(dtype), torch.rand(b, H, generator=g)
        A = -torch.rand(H, generator=g) * 4
        B, C = (torch.randn(b, G, N, generator=g).to(dtype) for _ in range(2))
        y_ref, s_ref = ssd_step(state.clone(), x, dt, A, B, C)
        y = kernels.fast_step(state, x, dt, A, B, C)  # updates `state` in place
        assert y is not None, kernels._triton_step_failed
        assert y.dtype == dtype and y.shape == (b, H, P)
        assert torch.allclose(state, s_ref, atol=1e-6, rtol=1e-5)
        assert torch.allclose(y.float(), y_ref.float(), atol=1e-5 if dtype == torch.float32 else 2e-2, rtol=1e-2)

m = tiny_model()
prompt = torch.randint(3, 512, (2, 9))
outs = []
for backend in ("auto", "reference"):  # "reference" switches the Triton step off too
    kernels.set_scan_backend(backend)
    cache = m.new_cache(2, capacity=32)
    with torch.no_grad():
        logits = [m(prompt, cache)[:, -1]] + [m(prompt[:, t:t + 1], cache)[:, -1] for t in range(4)]
    outs.append(torch.stack(logits))
assert kernels._triton_step_failed is None
assert torch.allclose(outs[0], outs[1], atol=1e-5)
print("triton step ok")
"""


@pytest.mark.slow
def test_triton_decode_step_matches_reference_step_and_model_decode():
    """hytron's Triton decode-step kernel (Triton's interpreter, CPU) vs `ssd_step`, alone and in the model."""
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _TRITON_CHECK], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "triton step ok" in proc.stdout, proc.stderr[-3000:]


def test_weight_major_pass_rewrites_the_batched_products_only():
    """The batched decode step's products x·Wᵀ (x with a symbolic number of rows, W a graph input) run as (W·xᵀ)ᵀ,
    with the same values; a product with a fixed number of rows (the one-row graph) is left alone."""
    wm = kernels._weight_major_pass()

    def f(x, w, v):
        return torch.relu(x @ w.T) @ v.T

    w, v = torch.randn(48, 32), torch.randn(24, 48)
    options = {"post_grad_custom_pre_pass": wm, "fx_graph_cache": False}  # compiled here, not read from the cache
    step = torch.compile(f, options=options)
    x = torch.randn(6, 32)
    torch._dynamo.mark_dynamic(x, 0)
    with torch.inference_mode():
        torch.testing.assert_close(step(x, w, v), f(x, w, v), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(step(x[:3], w, v), f(x[:3], w, v), atol=1e-5, rtol=1e-5)  # same graph
        assert wm.rewritten == 2
        one = torch.compile(f, options=options, dynamic=False)
        torch.testing.assert_close(one(x[:1], w, v), f(x[:1], w, v), atol=1e-5, rtol=1e-5)
        assert wm.rewritten == 2
        # one thread's variant takes only the products whose weight has at least `min_rows` rows (here: w, not v)
        big = kernels._weight_major_pass(min_rows=40)
        y = torch.randn(5, 32)
        torch._dynamo.mark_dynamic(y, 0)
        torch.testing.assert_close(torch.compile(f, options={**options, "post_grad_custom_pre_pass": big})(y, w, v),
                                   f(y, w, v), atol=1e-5, rtol=1e-5)
        assert big.rewritten == 1
