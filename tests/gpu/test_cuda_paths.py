"""Every CUDA path against its CPU reference, with stated tolerances; skipped without a CUDA GPU.

Error is ‖out − ref‖ / ‖ref‖ against a CPU reference in fp32 or fp64. Tolerances: fp32 on the GPU (TF32
off) 1e-4; bf16 weights or autocast 3e-2 (bf16 keeps 8 significant bits: ~4e-3 per rounding, a few
roundings deep); native FP8 GEMMs vs their exact emulation 1e-3 (same FP8 products; Hopper's FP8 tensor
cores accumulate with fewer than fp32's 24 bits, DeepSeek-V3 report §3.3.2). `bash bench/gpu.sh` runs these.
"""

import copy

import pytest
import torch

from hytron.model import kernels
from hytron.model.ssd import ssd_chunked, ssd_naive
from tests.conftest import tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

FP32, BF16, FP8 = 1e-4, 3e-2, 1e-3


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().cpu().double(), ref.detach().cpu().double()
    assert torch.isfinite(out).all(), "non-finite values in the GPU result"
    return float((out - ref).norm() / ref.norm())


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.fixture
def scan_backend():
    previous = kernels.scan_backend()
    yield kernels.set_scan_backend
    kernels.set_scan_backend(previous)


def _scan_inputs(b=2, L=300, H=8, P=16, G=2, N=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, H, P, generator=g)
    dt = torch.rand(b, L, H, generator=g) * 0.2
    A = -torch.rand(H, generator=g) * 4
    B, C = torch.randn(b, L, G, N, generator=g), torch.randn(b, L, G, N, generator=g)
    h0 = torch.randn(b, H, P, N, generator=g)
    return x, dt, A, B, C, h0


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_ssd_scan_on_cuda_matches_the_fp64_recurrence(scan_backend, backend):
    """SSD scan (eager reference; mamba-ssm when installed) in fp32 and bf16 on the GPU."""
    _check_scan(scan_backend, backend)


def _check_scan(scan_backend, backend):
    x, dt, A, B, C, h0 = _scan_inputs()
    y_ref, s_ref = ssd_naive(*(t.double() for t in (x, dt, A, B, C)), initial_state=h0.double())
    scan_backend(backend)
    for dtype, tol in ((torch.float32, FP32), (torch.bfloat16, BF16)):
        cx, cB, cC = (t.cuda().to(dtype) for t in (x, B, C))
        cdt, cA, ch0 = dt.cuda(), A.cuda(), h0.cuda()
        fast = kernels.fast_scan(cx, cdt, cA, cB, cC, 64, ch0)
        y, s = fast if fast is not None else ssd_chunked(cx, cdt, cA, cB, cC, 64, initial_state=ch0)
        # bf16 inputs are rounded before the scan: compare with the recurrence on the same rounded inputs
        if dtype == torch.bfloat16:
            xr, Br, Cr = (t.to(dtype).double() for t in (x, B, C))
            y_ref_d, s_ref_d = ssd_naive(xr, dt.double(), A.double(), Br, Cr, initial_state=h0.double())
        else:
            y_ref_d, s_ref_d = y_ref, s_ref
            tol = 1e-3 if fast is not None else tol  # Triton kernels use TF32 dots for fp32 (~3e-4)
        assert rel(y, y_ref_d) < tol and rel(s, s_ref_d) < tol, (backend, dtype)


def test_mamba_mixer_bf16_on_cuda_matches_fp32_cpu():
    """in_proj, the causal conv (causal-conv1d when installed, else cuDNN), scan, gated norm, out_proj."""
    m = tiny_model()
    mixer = m.backbone.layers[0].mixer
    u = torch.randn(2, 70, m.config.hidden_size)
    with torch.no_grad():
        ref = mixer(u)
        fast = mixer.cuda().to(torch.bfloat16)(u.cuda().to(torch.bfloat16))
    assert rel(fast, ref) < BF16


def test_attention_bf16_on_cuda_matches_fp32_cpu_full_and_cached():
    m = tiny_model()
    attn = next(b.mixer for b in m.backbone.layers if b.kind == "*")
    h = torch.randn(2, 40, m.config.hidden_size)
    with torch.no_grad():
        ref = attn(h)
        gpu = attn.cuda().to(torch.bfloat16)
        full = gpu(h.cuda().to(torch.bfloat16))
        cache = m.cuda().to(torch.bfloat16).new_cache(2, capacity=64)
        state = next(s for s in cache.layers if hasattr(s, "k"))
        first = gpu(h[:, :30].cuda().to(torch.bfloat16), state, cache.lengths)
        cache.lengths += 30
        steps = []
        for t in range(30, 40):
            steps.append(gpu(h[:, t:t + 1].cuda().to(torch.bfloat16), state, cache.lengths))
            cache.lengths += 1
    assert rel(full, ref) < BF16
    assert rel(torch.cat([first, *steps], 1), ref) < BF16


def test_moe_on_cuda_matches_cpu():
    """fp32 on both sides (bf16 inputs would move near-tied router scores and change the chosen experts)."""
    m = tiny_model("hytron-tiny-moe")
    moe = next(b.mixer for b in m.backbone.layers if b.kind == "E")
    h = torch.randn(3, 50, m.config.hidden_size)
    with torch.no_grad():
        ref = moe(h)
        fast = moe.cuda()(h.cuda())
    assert rel(fast, ref) < FP32


def test_native_fp8_gemm_matches_emulation():
    from hytron.lowp.native import fp8_matmul_t, native_fp8_ok, scaled_mm_available
    from hytron.lowp.quantize import quantize

    if not scaled_mm_available(torch.device("cuda")):
        pytest.skip("this GPU has no FP8 tensor cores (needs compute capability >= 8.9)")
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(256, 1024, device="cuda", generator=g)
    b = torch.randn(512, 1024, device="cuda", generator=g) * 0.05
    for fa, fb in (("e4m3", "e4m3"), ("e5m2", "e4m3")):
        qa, qb = quantize(a, fa), quantize(b, fb)
        assert native_fp8_ok(qa, qb)
        native = fp8_matmul_t(qa, qb)
        emulated = qa.dequantize().double() @ qb.dequantize().double().t()
        assert rel(native, emulated) < FP8, (fa, fb)


def test_fp8_training_step_native_matches_emulated(monkeypatch):
    """A converted model's loss and gradients: native FP8 GEMMs (torch._scaled_mm) vs the exact emulation."""
    import hytron.lowp.linear as linear
    from hytron.lowp import PrecisionRecipe, convert
    from hytron.lowp.native import scaled_mm_available

    if not scaled_mm_available(torch.device("cuda")):
        pytest.skip("this GPU has no FP8 tensor cores (needs compute capability >= 8.9)")
    calls = []
    native_mm = linear.fp8_matmul_t
    monkeypatch.setattr(linear, "fp8_matmul_t", lambda *a, **k: calls.append(1) or native_mm(*a, **k))
    results, base = [], tiny_model()
    for native in (True, False):
        m = copy.deepcopy(base).cuda().train()
        convert(m, PrecisionRecipe.from_name("fp8", native_fp8=native))
        # 2 x 64 = 128 tokens: every GEMM dimension a multiple of 16, as _scaled_mm requires (most layers)
        ids = torch.randint(0, m.config.vocab_size, (2, 65), generator=torch.Generator().manual_seed(1)).cuda()
        loss = m.loss(ids[:, :-1], ids[:, 1:])
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])))
        assert (len(calls) > 0) == native, "native run must use _scaled_mm, the emulated run must not"
        calls.clear()
    (l_n, g_n), (l_e, g_e) = results
    assert rel(l_n, l_e) < FP8 and rel(g_n, g_e) < 10 * FP8  # gradients pass through several FP8 GEMMs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_decode_step_on_cuda_matches_reference_step(dtype):
    """hytron's Triton decode-step kernel, compiled for this GPU, vs `ssd_step` on the CPU in fp64."""
    from hytron.model.ssd import ssd_step

    if not kernels.kernels_available()["triton_step"]:
        pytest.skip("the triton package is not installed")
    g = torch.Generator().manual_seed(6)
    b, H, P, N, G = 5, 16, 40, 128, 4  # P = 40: a partial P tile
    state = torch.randn(b, H, P, N, generator=g)
    x, dt = torch.randn(b, H, P, generator=g).to(dtype), torch.rand(b, H, generator=g)
    A = -torch.rand(H, generator=g) * 4
    B, C = (torch.randn(b, G, N, generator=g).to(dtype) for _ in range(2))
    y_ref, s_ref = ssd_step(state.double(), x.double(), dt.double(), A.double(), B.double(), C.double())
    s_gpu = state.cuda()
    y = kernels.fast_step(s_gpu, x.cuda(), dt.cuda(), A.cuda(), B.cuda(), C.cuda())
    assert y is not None, kernels._triton_step_failed
    assert rel(s_gpu, s_ref) < FP32 and rel(y, y_ref) < (FP32 if dtype == torch.float32 else BF16)


def test_cached_decode_matches_full_forward_in_bf16_on_cuda():
    m = tiny_model().cuda().to(torch.bfloat16)
    ids = torch.randint(0, m.config.vocab_size, (2, 45), generator=torch.Generator().manual_seed(2)).cuda()
    with torch.no_grad():
        full = m(ids)
        cache = m.new_cache(2, capacity=64)
        parts = [m(ids[:, :30], cache)]
        parts += [m(ids[:, t:t + 1], cache) for t in range(30, 45)]
    assert rel(torch.cat(parts, 1).float(), full.float()) < BF16


def test_bf16_autocast_training_step_on_cuda_matches_fp32_cpu():
    """The training path: fp32 weights, bf16 autocast on the GPU vs plain fp32 on the CPU."""
    ref_model = tiny_model().train()
    gpu_model = copy.deepcopy(ref_model).cuda()
    ids = torch.randint(0, 512, (2, 80), generator=torch.Generator().manual_seed(3))
    ref_loss = ref_model.loss(ids[:, :-1], ids[:, 1:])
    ref_loss.backward()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = gpu_model.loss(ids[:, :-1].cuda(), ids[:, 1:].cuda())
    loss.backward()
    assert rel(loss, ref_loss) < BF16
    grads = lambda m: torch.cat([p.grad.flatten() for p in m.parameters()])  # noqa: E731
    assert rel(grads(gpu_model), grads(ref_model)) < 3 * BF16


def test_graphed_decoder_on_cuda_matches_eager_decode():
    """CUDA-graph replay of decode_step vs the model's own cached decode, rows of unequal lengths, fp32."""
    m = tiny_model().cuda()
    V = m.config.vocab_size
    caches = []
    for _ in range(2):
        batch = m.new_cache(3, capacity=96)
        for r, n in enumerate((7, 20, 41)):
            one = m.new_cache(1, capacity=96)
            with torch.no_grad():
                m(torch.arange(3, 3 + n, device="cuda")[None] % V, one)
            batch.insert(r, one)
        caches.append(batch)
    ref_cache, graph_cache = caches
    dec = kernels.StaticDecoder(m, graph_cache, "graph")
    assert dec.graph is not None
    tok = torch.tensor([[5], [6], [7]], device="cuda")
    for _ in range(12):
        with torch.no_grad():
            ref = m(tok, ref_cache)[:, -1]
        out = dec.step(tok)
        assert rel(out, ref) < FP32
        tok = ref.argmax(-1, keepdim=True)
    assert torch.equal(graph_cache.lengths, ref_cache.lengths)


def test_transformers_nemotron_h_on_cuda_matches_hytron(tmp_path):
    """The peer the benchmark compares with computes the same function on the GPU (fp32, its torch path)."""
    from transformers import AutoModelForCausalLM

    m = tiny_model()
    m.save_pretrained(tmp_path)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).cuda().eval()
    ids = torch.randint(0, 512, (2, 50), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = m.cuda()(ids.cuda())
        ref = theirs(ids.cuda()).logits
    assert rel(ours, ref) < FP32


# ---- torch.compile paths last: they spend most of this file's time compiling ----------------------------
def test_compiled_ssd_scan_on_cuda_matches_the_fp64_recurrence(scan_backend):
    _check_scan(scan_backend, "compile")


def test_compiled_blocks_on_cuda_match_eager_forward_and_backward():
    eager = tiny_model().cuda().train()
    compiled = copy.deepcopy(eager)
    kernels.compile_blocks(compiled)
    ids = torch.randint(0, 512, (2, 64), generator=torch.Generator().manual_seed(4)).cuda()
    losses, grads = [], []
    for m in (eager, compiled):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m.loss(ids[:, :-1], ids[:, 1:])
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert rel(losses[1], losses[0]) < BF16 and rel(grads[1], grads[0]) < 3 * BF16
