"""The SSD scan: chunked scan, naive recurrence and one-token steps compute the same thing."""

import pytest
import torch
import torch.nn.functional as F

from hytron.model import ssd
from hytron.model.ssd import factored_chunk, ssd_chunked, ssd_naive, ssd_step, ssd_tracked


@pytest.fixture(params=["factored", "diff"])
def path(request, monkeypatch):
    """Run a test through each of the chunked scan's two implementations: the factored one (when the decays
    allow; `factored_chunk` says at which chunk length) and the exponent differences (forced here by a bound no
    chunk meets)."""
    if request.param == "diff":
        monkeypatch.setattr(ssd, "FACTOR_MAX_LOG", -1.0)
    return request.param


def _inputs(dtype, b=2, L=45, H=4, P=3, G=2, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    x, B, C = r(b, L, H, P), r(b, L, G, N), r(b, L, G, N)
    dt = F.softplus(r(b, L, H))
    A = -torch.rand(H, generator=g, dtype=dtype) * 2 - 0.1
    h0 = r(b, H, P, N)
    return x, dt, A, B, C, h0


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunk", [1, 4, 7, 16, 64])
def test_chunked_equals_naive_with_initial_state(dtype, tol, chunk, path):
    x, dt, A, B, C, h0 = _inputs(dtype)
    assert (factored_chunk(dt, A, chunk, B.size(-1)) is not None) == (path == "factored")
    y_ref, s_ref = ssd_naive(x.double(), dt.double(), A.double(), B.double(), C.double(), h0.double())
    y, s = ssd_chunked(x, dt, A, B, C, chunk, initial_state=h0)
    scale = y_ref.abs().max()
    assert (y.double() - y_ref).abs().max() / scale <= tol
    assert (s.double() - s_ref).abs().max() / s_ref.abs().max() <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_step_by_step_equals_chunked(dtype, tol):
    x, dt, A, B, C, h0 = _inputs(dtype, L=20)
    y_ref, s_ref = ssd_chunked(x.double(), dt.double(), A.double(), B.double(), C.double(), 8, h0.double())
    state = h0.clone()
    ys = []
    for t in range(x.size(1)):
        y_t, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y_t)
    y = torch.stack(ys, 1)
    assert (y.double() - y_ref).abs().max() / y_ref.abs().max() <= tol
    assert (state.double() - s_ref).abs().max() / s_ref.abs().max() <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("L", [1, 2, 5, 8])
def test_tracked_states_equal_the_recurrence_after_every_token(dtype, tol, L):
    """The vectorised verify scan: its y and each of its L+1 states equal the one-token recurrence's."""
    x, dt, A, B, C, h0 = _inputs(dtype, L=L, H=6, G=3)
    y, steps = ssd_tracked(h0.clone(), x, dt, A, B, C)
    assert steps.shape == (2, L + 1, 6, 3, 5)
    state = h0.double()
    assert torch.equal(steps[:, 0], h0)
    for t in range(L):
        y_t, state = ssd_step(state, x[:, t].double(), dt[:, t].double(), A.double(), B[:, t].double(),
                              C[:, t].double())
        assert (y[:, t].double() - y_t).abs().max() / y_t.abs().max() <= tol
        assert (steps[:, t + 1].double() - state).abs().max() / state.abs().max() <= tol


def test_factored_chunk_halves_for_fast_decays_and_gives_up_below_the_minimum():
    x, dt, A, B, C, h0 = _inputs(torch.float32, L=256)
    slow = torch.full_like(dt, 0.01)
    assert factored_chunk(slow, A, 64, 5) == 64  # at most 2.1·0.01·64 = 1.3 per chunk
    fast = torch.full_like(dt, 1.0)  # |A| up to 2.1 per step: -a past 60 within 32 tokens
    q = factored_chunk(fast, A, 64, 5)
    assert q is not None and q < 64
    assert -A.min().item() * q <= ssd.FACTOR_MAX_LOG < -A.min().item() * 2 * q  # the longest that fits
    assert factored_chunk(torch.full_like(dt, 10.0), A, 64, 5) is None  # 21 per step: 8 tokens already past 60
    # halving multiplies the chunks, and the carry across them is quadratic in their number: with |A|·Δ up to 4.2
    # per step the chunk must be 8; over 256 tokens that is 32 chunks, over 4,096 tokens 512 (513² · N > L · 64,
    # as for 16), so there the halving stops and the exponent-difference scan runs
    faster = torch.full((1, 4096, 4), 3.0)
    assert -A.min().item() * 3.0 * 16 > ssd.FACTOR_MAX_LOG >= -A.min().item() * 3.0 * 8
    assert factored_chunk(faster[:, :256], A, 64, 5) == 8
    assert factored_chunk(faster, A, 64, 5) is None
    for d in (fast, torch.full_like(dt, 10.0)):
        y_ref, s_ref = ssd_naive(x.double(), d.double(), A.double(), B.double(), C.double(), h0.double())
        y, s = ssd_chunked(x, d, A, B, C, 64, initial_state=h0)
        assert (y.double() - y_ref).abs().max() / y_ref.abs().max() <= 1e-5
        assert (s.double() - s_ref).abs().max() / s_ref.abs().max() <= 1e-5


@pytest.mark.parametrize("scale", [1e-20, 1e-3, 5.0])
def test_chunked_equals_naive_at_extreme_steps(scale, path):
    # tiny Δ (the factored path's v = Δ·exp(-a) must not underflow) and large ones (exp(-a) at the bound)
    x, dt, A, B, C, h0 = _inputs(torch.float32, L=96)
    dt = dt * scale
    y_ref, s_ref = ssd_naive(x.double(), dt.double(), A.double(), B.double(), C.double(), h0.double() * scale)
    y, s = ssd_chunked(x, dt, A, B, C, 32, initial_state=h0 * scale)
    assert torch.isfinite(y).all() and torch.isfinite(s).all()
    assert (y.double() - y_ref).abs().max() / y_ref.abs().max() <= 1e-5
    assert (s.double() - s_ref).abs().max() / s_ref.abs().max() <= 1e-5


def test_empty_sequence_returns_the_initial_state():
    x, dt, A, B, C, h0 = _inputs(torch.float32, L=0)
    y, s = ssd_chunked(x, dt, A, B, C, 16, initial_state=h0)
    assert y.shape == (2, 0, 4, 3) and torch.equal(s, h0)


def test_scan_split_in_two_with_carried_state():
    x, dt, A, B, C, h0 = _inputs(torch.float64)
    y_all, s_all = ssd_chunked(x, dt, A, B, C, 8, h0)
    y1, s1 = ssd_chunked(x[:, :20], dt[:, :20], A, B[:, :20], C[:, :20], 8, h0)
    y2, s2 = ssd_chunked(x[:, 20:], dt[:, 20:], A, B[:, 20:], C[:, 20:], 8, s1)
    assert torch.allclose(torch.cat([y1, y2], 1), y_all, atol=1e-10, rtol=0)
    assert torch.allclose(s2, s_all, atol=1e-10, rtol=0)


def test_groups_map_to_heads_by_repeat_interleave():
    # heads 0,1 must use group 0 and heads 2,3 group 1: zeroing group 1's B silences heads 2,3 only
    x, dt, A, B, C, _ = _inputs(torch.float64)
    B[:, :, 1] = 0
    y, _ = ssd_chunked(x, dt, A, B, C, 8)
    assert y[:, :, 2:].abs().max() == 0
    assert y[:, :, :2].abs().max() > 0


@pytest.mark.parametrize("chunk", [4, 16, 64])
def test_chunked_gradients_equal_naive_gradients(chunk, path):
    # the chunked scan's backward (clamped decay exponents, batched matmuls) against autograd through the plain
    # recurrence, in fp64; decays up to ~6 per step, so within-chunk exponents pass the -80 clamp
    inputs = [t.requires_grad_() for t in _inputs(torch.float64, L=37)]
    g = torch.Generator().manual_seed(1)
    wy, ws = torch.randn(2, 37, 4, 3, generator=g, dtype=torch.float64), torch.randn(2, 4, 3, 5, generator=g,
                                                                                         dtype=torch.float64)

    def grads(fn):
        y, s = fn()
        return torch.autograd.grad((y * wy).sum() + (s * ws).sum(), inputs)

    x, dt, A, B, C, h0 = inputs
    assert (factored_chunk(dt, A, chunk, B.size(-1)) is not None) == (path == "factored")
    want = grads(lambda: ssd_naive(x, dt, A, B, C, h0))
    got = grads(lambda: ssd_chunked(x, dt, A, B, C, chunk, h0))
    for name, w, h in zip(("x", "dt", "A", "B", "C", "h0"), want, got):
        assert (h - w).abs().max() <= 1e-9 * w.abs().max(), name
