"""Optional fast paths for the Mamba-2 mixer: mamba-ssm / causal-conv1d CUDA kernels and torch.compile.

Nothing here is imported on the CPU path unless asked for: the kernels are looked up lazily, only for CUDA
tensors, and only once. Each fast path has a test that it agrees with the plain-PyTorch reference
(`hytron.model.ssd`); the reference stays the definition.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


@functools.cache
def _mamba_ssm_scan():
    """mamba_ssm's fused chunked scan (Triton, CUDA only), or None when the package is absent."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # noqa: BLE001 - not installed, or installed without a working Triton/CUDA
        return None
    return mamba_chunk_scan_combined


@functools.cache
def _causal_conv1d():
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:  # noqa: BLE001
        return None
    return causal_conv1d_fn


def kernels_available() -> dict[str, bool]:
    """Which optional CUDA kernels can be used on this machine."""
    if not torch.cuda.is_available():
        return {"mamba_ssm": False, "causal_conv1d": False}
    return {"mamba_ssm": _mamba_ssm_scan() is not None, "causal_conv1d": _causal_conv1d() is not None}


def fast_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
              initial_state: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """The fused CUDA scan with `ssd_chunked`'s contract, or None when it does not apply (CPU, no package)."""
    if not x.is_cuda:
        return None
    scan = _mamba_ssm_scan()
    if scan is None:
        return None
    # mamba_ssm takes dt already softplus'ed when dt_softplus=False and no dt_bias; D is added by the caller
    y, final = scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=initial_state,
                    dt_softplus=False, return_final_states=True)
    return y, final


def fast_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
    """Depthwise causal conv + SiLU over (b, channels, L) from causal-conv1d, or None when it does not apply."""
    if not x.is_cuda:
        return None
    fn = _causal_conv1d()
    if fn is None:
        return None
    return fn(x, weight[:, 0], bias, activation="silu")


def compile_blocks(model: torch.nn.Module, **compile_kwargs) -> torch.nn.Module:
    """Regional compilation: `torch.compile` each block in place (small graphs, compiled once, reused)."""
    for block in model.backbone.layers:
        block.compile(**compile_kwargs)
    return model
