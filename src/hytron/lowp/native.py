"""Native FP8 GEMMs through torch._scaled_mm on CUDA GPUs that have FP8 tensor cores (sm_89+), behind a guard.

The CPU path never comes here: `scaled_mm_available` is False without CUDA, and QuantLinear then runs the
exact emulation (dequantize, fp32 GEMM). Both compute the same products of the same FP8 values; they
differ only in fp32 summation order.
"""

from __future__ import annotations

import torch

from hytron.lowp.quantize import Quantized

_FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def scaled_mm_available(device: torch.device) -> bool:
    """True on a CUDA device with compute capability >= 8.9 and a torch that has _scaled_mm."""
    if device.type != "cuda" or not torch.cuda.is_available() or not hasattr(torch, "_scaled_mm"):
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def native_fp8_ok(a: Quantized, b: Quantized) -> bool:
    """Both operands per-tensor FP8, not both E5M2 (cuBLAS has no e5m2 x e5m2), all dims multiples of 16."""
    if a.fmt not in _FP8_DTYPES or b.fmt not in _FP8_DTYPES or a.fmt == b.fmt == "e5m2":
        return False
    (m, k), (n, k2) = a.values.shape, b.values.shape
    dims_ok = k == k2 and m % 16 == 0 and k % 16 == 0 and n % 16 == 0
    return dims_ok and scaled_mm_available(a.values.device)


def fp8_matmul_t(a: Quantized, b: Quantized, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """a @ bᵀ for per-tensor FP8 operands a (M, K) and b (N, K): (a_q @ b_qᵀ) * s_a * s_b on tensor cores."""
    a8 = a.values.to(_FP8_DTYPES[a.fmt])
    b8 = b.values.to(_FP8_DTYPES[b.fmt])  # (N, K) row-major; .t() is the column-major (K, N) cuBLAS wants
    scale_a = torch.as_tensor(a.tensor_scale, dtype=torch.float32, device=a8.device).reshape(())
    scale_b = torch.as_tensor(b.tensor_scale, dtype=torch.float32, device=b8.device).reshape(())
    return torch._scaled_mm(a8, b8.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype)
