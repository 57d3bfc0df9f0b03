"""Mamba-2 state-space duality (SSD) in plain PyTorch: chunked scan, naive recurrence, one-token step.

Notation (Mamba-2 paper, arXiv 2405.21060): per head h with scalar A_h < 0 and step Δ_t > 0,

    S_t = exp(Δ_t A_h) · S_{t-1} + (Δ_t x_t) ⊗ B_t          S: (P, N) per head
    y_t = S_t · C_t                                        (the D·x skip is added by the mixer)

B and C are shared by the H/G heads of a group: head h uses group h // (H/G) ("repeat_interleave").
All three functions compute the same thing; tests hold them equal to 1e-10 in fp64.
The scan always runs in fp32 (or fp64 if given fp64), whatever the model's dtype; the chunked scan forms its
cumulated log-decays in fp64 (and, on its exponent-difference path, their differences).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_SCAN_CHUNK = 256  # the longest chunk the reference scan uses (see ssd_chunked)


def _scan_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Chunked SSD scan for training and prefill.

    x: (b, L, H, P)   dt: (b, L, H) (already softplus'ed)   A: (H,)   B, C: (b, L, G, N)
    initial_state: (b, H, P, N) or None.  Returns y: (b, L, H, P) and the final state (b, H, P, N).

    Two exact implementations of the same sum (issue 27), chosen per call:
    - factored (eager, CPU): the within-chunk decay exp(a_l - a_s)·Δ_s is the product of a per-target factor
      u_l = exp(a_l) and a per-source factor v_s = Δ_s·exp(-a_s) (a: the log-decay cumulated from the chunk's
      start, in fp64; u and v rounded once to fp32), so no (Q x Q) decay is formed at all: v scales x on its
      way into the chunked layout, u scales the output on its way out, and the within-chunk product is one GEMM
      per group and chunk, C·Bᵀ (Q x Q, shared by the group's heads) times the group's R heads side by side
      (Q x R·P). It needs u and v inside fp32's range, i.e. every chunk's total log-decay (and log Δ) within
      `FACTOR_MAX_LOG`: the chunk is halved until it is (down to `FACTOR_MIN_CHUNK`, and while the carry across
      the more numerous chunks stays cheap; the chunk length does not change the result), see `factored_chunk`;
    - exponent differences (`_ssd_chunked_diff`): exp(a_l - a_s) over each Q x Q block, clamped at -80; the
      path under torch.compile (no data-dependent choice), off the CPU, and for decays too fast to factor.
    """
    # The chunk is a compute choice, not part of the model: every chunk length gives the same result, and memory
    # is b·H·L·Q (the Q x Q decay per chunk). So the reference never uses more than MAX_SCAN_CHUNK, whatever
    # config.json says (issue 26: chunk_size 100000 made every prefill try to allocate 10 GB).
    Q = min(chunk_size, MAX_SCAN_CHUNK)
    if x.device.type == "cpu" and x.numel() and not torch.compiler.is_compiling():
        plan = _factored_plan(dt, A, Q, B.size(-1))
        if plan is not None:
            return _ssd_chunked_factored(x, B, C, *plan, initial_state)
    return _ssd_chunked_diff(x, dt, A, B, C, Q, initial_state)


FACTOR_MAX_LOG = 60.0  # |log u|, log v at most this: u >= e^-60 (normal fp32), v·|x|·|C·B|·Q far from fp32's max
FACTOR_MIN_CHUNK = 8  # below this the factored form has no GEMMs left to win; use the exponent differences


def _chunk_log_decay(dt: Tensor, A: Tensor, q: int) -> tuple[Tensor, Tensor]:
    """In fp64, per chunk of q tokens (dt padded to a multiple of q): a = log-decay cumulated from the chunk's
    start (b, c, q, H) and log v = log Δ - a."""
    b, L, H = dt.shape
    dt64 = F.pad(dt.to(torch.float64), (0, 0, 0, (-L) % q)).view(b, -1, q, H)
    a = torch.cumsum(dt64 * A.to(torch.float64), dim=2)
    return a, torch.log(dt64.clamp_min(1e-30)) - a


def _factored_plan(dt: Tensor, A: Tensor, chunk: int, state_size: int) -> tuple[int, Tensor, Tensor] | None:
    """The chunk length the factored scan uses for these decays, with its `_chunk_log_decay`: the longest of
    chunk, chunk/2, ... (at least FACTOR_MIN_CHUNK) whose every chunk keeps -a and log v within FACTOR_MAX_LOG;
    None when none does (the exponent-difference scan runs). A halving also stops where the carry across chunks
    ((c+1)² · P·N per head, quadratic in the number of chunks c) would cost more than the exponent-difference
    scan's within-chunk product at the full chunk (L · chunk · P per head). One host read per length tried."""
    L = dt.size(1)
    q = chunk
    while q >= min(chunk, FACTOR_MIN_CHUNK) and (q == chunk or (-(-L // q) + 1) ** 2 * state_size <= L * chunk):
        a, log_v = _chunk_log_decay(dt, A, q)
        if torch.maximum(-a[:, :, -1].min(), log_v.max()).detach().item() <= FACTOR_MAX_LOG:
            return q, a, log_v
        q //= 2
    return None


def factored_chunk(dt: Tensor, A: Tensor, chunk: int, state_size: int) -> int | None:
    """The chunk length `ssd_chunked` (on CPU, eager) runs the factored scan at for these decays, `chunk` and
    state size N, or None when it runs the exponent-difference scan."""
    with torch.no_grad():
        plan = _factored_plan(dt, A, min(chunk, MAX_SCAN_CHUNK), state_size)
    return None if plan is None else plan[0]


def _ssd_chunked_factored(x: Tensor, B: Tensor, C: Tensor, Q: int, a: Tensor, log_v: Tensor,
                          initial_state: Tensor | None) -> tuple[Tensor, Tensor]:
    """The factored scan (see `ssd_chunked`): y_l = u_l·(sum_{s<=l} (C_l·B_s) v_s x_s + C_l·S_in), chunk by
    chunk, laid out (b, G, c, Q, R, P) so that every contraction is one batched GEMM over (b, G, c)."""
    b, L, H, P = x.shape
    G, N = B.shape[-2:]
    R = H // G
    out_dtype, dtype = x.dtype, _scan_dtype(x)
    pad = (-L) % Q
    c = (L + pad) // Q
    if pad:  # dt = 0 on padding: decay 1 and no input, so the final state is untouched
        x, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, B, C))
    # a, log_v: (b, c, Q, H) in fp64, from `_factored_plan`
    u = torch.exp(a).to(dtype).view(b, c, Q, G, R)  # target factor exp(a_l) <= 1
    v = torch.exp(log_v).to(dtype).view(b, c, Q, G, R).permute(0, 3, 1, 2, 4).contiguous()  # (b, G, c, Q, R)
    # x scaled by v on its way into the chunked layout (b, G, c, Q, R, P) (v first: the product takes its layout)
    xv = (v[..., None] * x.view(b, c, Q, G, R, P).permute(0, 3, 1, 2, 4, 5)).contiguous().view(b, G, c, Q, R * P)
    Bg, Cg = (t.to(dtype).view(b, c, Q, G, N).permute(0, 3, 1, 2, 4).reshape(b * G * c, Q, N) for t in (B, C))

    # 1. within each chunk, all R heads of a group in one GEMM: (C·Bᵀ, causal) @ (v x)
    CB = torch.tril(torch.bmm(Cg, Bg.transpose(-1, -2)))  # (b·G·c, Q, Q)
    y = torch.bmm(CB, xv.view(b * G * c, Q, R * P))  # (b·G·c, Q, R·P)

    # 2. the state each chunk adds by its end, exp(a_end)·sum_s v_s x_s ⊗ B_s: (b, G, R, c, P, N)
    raw = torch.bmm(xv.view(b * G * c, Q, R * P).transpose(-1, -2), Bg).view(b, G, c, R, P, N)
    st = raw * u[:, :, -1].permute(0, 2, 1, 3)[..., None, None]
    # 3. carry states across chunks: S_in[z] = sum_{c' < z} exp(sum of chunk decays c'+1..z-1) st[c']
    if initial_state is None:
        init = torch.zeros(b, G, R, 1, P, N, dtype=dtype, device=x.device)
    else:
        init = initial_state.to(dtype).reshape(b, G, R, 1, P, N)
    states = torch.cat([init, st.transpose(2, 3)], dim=3)  # (b, G, R, c+1, P, N): index 0 is before chunk 0
    chunk_cum = F.pad(torch.cumsum(a[:, :, -1], dim=1), (0, 0, 1, 0))  # (b, c+1, H)
    chunk_cum = chunk_cum.view(b, c + 1, G, R).permute(0, 2, 3, 1)  # (b, G, R, c+1)
    chunk_decay = (chunk_cum[..., :, None] - chunk_cum[..., None, :]).to(dtype).clamp_(-80.0, 0.0)
    chunk_decay = torch.tril(torch.exp(chunk_decay))  # (b, G, R, c+1, c+1) [target, source]
    states = torch.matmul(chunk_decay, states.flatten(-2)).view(b, G, R, c + 1, P, N)
    states_in, final_state = states[:, :, :, :-1], states[:, :, :, -1]

    # 4. the carried-in state's output C_l·S_in, added by the GEMM; then everything times u_l on the way out
    S = states_in.permute(0, 1, 3, 5, 2, 4).reshape(b * G * c, N, R * P)
    y = torch.baddbmm(y, Cg, S).view(b, G, c, Q, R, P)
    y = (u[..., None] * y.permute(0, 2, 3, 1, 4, 5)).reshape(b, c * Q, H, P)[:, :L]
    return y.to(out_dtype), final_state.reshape(b, H, P, N)


def _ssd_chunked_diff(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, Q: int,
                      initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The scan from exponent differences (see `ssd_chunked`).

    Laid out for batched GEMMs (issue 27): every contraction is one `matmul` over a (b, G, [R,] c) batch of
    small matrices with the contracted dim innermost, heads grouped as (G, R) so B and C are broadcast over the R
    heads of their group instead of repeated; the within-chunk decay is exp(cumsum_l - cumsum_s) from an fp64
    cumsum (exact to fp32 rounding, as a masked cumsum over the Q x Q block is, at a fraction of its cost; the
    difference of fp32 cumsums would lose |cumsum|·2⁻²⁴ of every exponent), with Δ folded
    into its exponent. Decay exponents are clamped at -80 (a weight < 2e-35, i.e. nothing; see step 1).
    """
    b, L, H, P = x.shape
    G, N = B.shape[-2:]
    R = H // G  # heads per group
    out_dtype, dtype = x.dtype, _scan_dtype(x)
    pad = (-L) % Q
    c = (L + pad) // Q
    if pad:  # dt = 0 on padding: decay 1 and no input, so the final state is untouched
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    # head-major chunks: (b, L, H, P) -> (b, G, R, c, Q, P); B and C per group: (b, G, 1, c, Q, N)
    xc = x.to(dtype).view(b, c, Q, G, R, P).permute(0, 3, 4, 1, 2, 5).contiguous()
    Bc = B.to(dtype).view(b, c, Q, G, N).permute(0, 3, 1, 2, 4).unsqueeze(2)
    Cc = C.to(dtype).view(b, c, Q, G, N).permute(0, 3, 1, 2, 4).unsqueeze(2)
    # log-decays cumulated within each chunk, in fp64: (b, G, R, c, Q). Source token s enters with log Δ_s added,
    # so exp(a_cum_l - (a_cum_s - log Δ_s)) = decay·Δ_s and Δ·x is never formed (one pass over x fewer)
    dt64 = dt.to(torch.float64).view(b, c, Q, G, R).permute(0, 3, 4, 1, 2)
    a_cum = torch.cumsum(dt64 * A.to(torch.float64).view(G, R, 1, 1), dim=-1)
    a_src = a_cum - torch.log(dt64.clamp_min(1e-30))

    # 1. within each chunk: y_l = sum_{s<=l} (C_l·B_s) exp(a_cum_l - a_cum_s) Δ_s x_s. Exponents are clamped to
    # [-80, 80]: a weight below 2e-35 is nothing next to the diagonal's, and exp is many times slower there
    # (denormals; measured 14x); above the diagonal the weight stays finite and the causal C·Bᵀ zeroes it.
    decay_in = torch.exp((a_cum[..., :, None] - a_src[..., None, :]).to(dtype).clamp_(-80.0, 80.0))
    CB = torch.tril(torch.matmul(Cc, Bc.transpose(-1, -2)))  # (b, G, 1, c, Q, Q), 0 above the diagonal
    y = torch.matmul(CB * decay_in, xc)  # (b, G, R, c, Q, P)

    # 2. the state each chunk adds by its end: sum_s exp(a_cum_end - a_cum_s) Δ_s x_s ⊗ B_s
    decay_to_end = torch.exp((a_cum[..., -1:] - a_src).to(dtype).clamp_(-80.0, 80.0))  # (b, G, R, c, Q)
    states = torch.matmul((xc * decay_to_end[..., None]).transpose(-1, -2), Bc)  # (b, G, R, c, P, N)

    # 3. carry states across chunks: S_in[z] = sum_{c' < z} exp(sum of chunk decays c'+1..z-1) st[c']
    if initial_state is None:
        init = torch.zeros(b, G, R, 1, P, N, dtype=dtype, device=x.device)
    else:
        init = initial_state.to(dtype).reshape(b, G, R, 1, P, N)
    states = torch.cat([init, states], dim=3)  # (b, G, R, c+1, P, N): index 0 is the state before chunk 0
    chunk_cum = F.pad(torch.cumsum(a_cum[..., -1], dim=-1), (1, 0))  # (b, G, R, c+1)
    chunk_decay = (chunk_cum[..., :, None] - chunk_cum[..., None, :]).to(dtype).clamp_(-80.0, 0.0)
    chunk_decay = torch.tril(torch.exp(chunk_decay))  # (b, G, R, c+1, c+1) [target, source]
    states = torch.matmul(chunk_decay, states.flatten(-2)).view(b, G, R, c + 1, P, N)
    states_in, final_state = states[:, :, :, :-1], states[:, :, :, -1]

    # 4. what the carried-in state contributes inside each chunk, exp(a_cum_l) C_l · S_in, added by the GEMM
    C_in = (Cc * torch.exp(a_cum.to(dtype).clamp_(min=-80.0))[..., None]).flatten(0, 3)  # (b·G·R·c, Q, N)
    y = torch.baddbmm(y.flatten(0, 3), C_in, states_in.transpose(-1, -2).flatten(0, 3)).view(b, G, R, c, Q, P)

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(b, c * Q, H, P)[:, :L]
    return y.to(out_dtype), final_state.reshape(b, H, P, N)


def ssd_naive(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
              initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The sequential recurrence, one token at a time: the ground truth for the chunked scan."""
    b, L, H, P = x.shape
    N = B.shape[-1]
    state = (torch.zeros(b, H, P, N, dtype=_scan_dtype(x), device=x.device) if initial_state is None
             else initial_state.to(_scan_dtype(x)))
    ys = []
    for t in range(L):
        y_t, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y_t)
    return torch.stack(ys, dim=1).to(x.dtype), state


def ssd_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """One token: state (b, H, P, N), x (b, H, P), dt (b, H), A (H,), B/C (b, G, N) -> y (b, H, P), state."""
    dtype = state.dtype
    b, H, P = x.shape
    G, N = B.shape[1:]
    R = H // G  # heads per group: view heads as (G, R) instead of repeating B and C per head
    dt = dt.to(dtype)
    decay = torch.exp(dt * A.to(dtype)).view(b, G, R, 1, 1)
    dBx = (dt[..., None] * x.to(dtype)).view(b, G, R, P, 1) * B.to(dtype).view(b, G, 1, 1, N)
    state = state.view(b, G, R, P, N) * decay + dBx
    y = (state * C.to(dtype).view(b, G, 1, 1, N)).sum(-1)  # (b, G, R, P)
    return y.reshape(b, H, P).to(x.dtype), state.view(b, H, P, N)


def ssd_tracked(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """A few tokens from `state`, keeping the state after every one of them (speculative verification), with no
    per-token loop: x (b, L, H, P), dt (b, L, H), A (H,), B/C (b, L, G, N), state (b, H, P, N) -> y (b, L, H, P)
    and the L+1 states (b, L+1, H, P, N), index j = the state after the first j tokens (0: `state` itself).

    The recurrence unrolled: S_j = exp(a_j) S_0 + sum_{s<=j} exp(a_j - a_s) Δ_s x_s ⊗ B_s with a_j the cumulated
    Δ·A, so all L states are one batched (L x L) @ (L x P·N) matmul per head over the L outer products (the
    lower-triangular decay matrix), plus the decayed initial state; y_j = S_j · C_j. Cost: L·H·P·N multiply-adds
    for the outer products, L²·H·P·N for the matmul and L·H·P·N for y, i.e. about (L + 2)/2 decode steps' worth
    of scan arithmetic for L tokens at L = 5, in a handful of ops instead of L steps of a dozen; memory (L+1)
    states. Meant for short L (the K+1 <= ~8 verified tokens): the chunked scan is the one for long inputs."""
    dtype = state.dtype
    b, L, H, P = x.shape
    G, N = B.shape[-2:]
    R = H // G
    dt = dt.to(dtype)
    a = torch.cumsum(dt * A.to(dtype), dim=1)  # (b, L, H): cumulated log-decay after each token
    a = a.view(b, L, G, R).permute(0, 2, 3, 1)  # (b, G, R, L)
    decay = torch.exp((a[..., :, None] - a[..., None, :]).clamp(max=0.0))  # (b, G, R, L, L) [target, source]
    decay = torch.tril(decay)
    dtx = (dt[..., None] * x.to(dtype)).view(b, L, G, R, P).permute(0, 2, 3, 1, 4)  # (b, G, R, L, P)
    Bg = B.to(dtype).permute(0, 2, 1, 3)[:, :, None]  # (b, G, 1, L, N)
    outer = (dtx[..., :, None] * Bg[..., None, :]).flatten(-2)  # (b, G, R, L, P·N)
    s0 = state.view(b, G, R, 1, P * N)
    states = torch.matmul(decay, outer) + torch.exp(a)[..., None] * s0  # (b, G, R, L, P·N)
    states = states.view(b, G, R, L, P, N)
    y = (states * C.to(dtype).permute(0, 2, 1, 3)[:, :, None, :, None, :]).sum(-1)  # (b, G, R, L, P)
    y = y.permute(0, 3, 1, 2, 4).reshape(b, L, H, P).to(x.dtype)
    steps = torch.cat([s0.view(b, G, R, 1, P, N), states], dim=3)  # (b, G, R, L+1, P, N)
    return y, steps.permute(0, 3, 1, 2, 4, 5).reshape(b, L + 1, H, P, N)
