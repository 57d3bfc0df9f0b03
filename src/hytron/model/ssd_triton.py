"""Triton kernel for the one-token SSD step (decode): the state update and output in one pass, in place.

`ssd_step` (the reference) reads and writes the (b, H, P, N) fp32 state several times per token (decay,
input, output each a separate kernel); at batch 128 of a 1B model that state is ~2.7 GB, so the decode step
is bound by those passes. This kernel reads the state once and writes it once. Imported only when used
(`hytron.model.kernels.fast_step`); needs the `triton` package, a CUDA device, or TRITON_INTERPRET=1 set
before the first import (then it runs on CPU tensors, slowly: the agreement test uses that).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _ssd_step_kernel(state_ptr, x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, y_ptr, H, P, N, R,
                     BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program per (row·head, block of P): S = exp(dt·A)·S + (dt·x) ⊗ B;  y = S · C."""
    bh = tl.program_id(0)  # row * H + head
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    head = bh % H
    group = (bh // H) * (H // R) + head // R  # row * G + head's group (heads of a group are consecutive)
    pm, nm = p < P, n < N
    dt = tl.load(dt_ptr + bh).to(tl.float32)
    decay = tl.exp(dt * tl.load(a_ptr + head).to(tl.float32))
    x = tl.load(x_ptr + bh * P + p, mask=pm, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + group * N + n, mask=nm, other=0.0).to(tl.float32)
    c = tl.load(c_ptr + group * N + n, mask=nm, other=0.0).to(tl.float32)
    offs = bh * P * N + p[:, None] * N + n[None, :]
    mask = pm[:, None] & nm[None, :]
    s = tl.load(state_ptr + offs, mask=mask, other=0.0)
    s = s * decay + (dt * x)[:, None] * b[None, :]
    tl.store(state_ptr + offs, s, mask=mask)
    y = tl.sum(s * c[None, :], axis=1)
    tl.store(y_ptr + bh * P + p, y.to(y_ptr.dtype.element_ty), mask=pm)


def ssd_step_(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """`ssd_step` with the state (b, H, P, N), fp32, contiguous, updated in place; returns y (b, H, P)."""
    b, H, P, N = state.shape
    G = B.shape[1]
    x, dt, A, B, C = (t.contiguous() for t in (x, dt.float(), A.float(), B, C))
    y = torch.empty_like(x)
    block_n = triton.next_power_of_2(N)
    block_p = min(triton.next_power_of_2(P), max(1, 4096 // block_n))
    grid = (b * H, triton.cdiv(P, block_p))
    _ssd_step_kernel[grid](state, x, dt, A, B, C, y, H, P, N, H // G, BLOCK_P=block_p, BLOCK_N=block_n)
    return y
