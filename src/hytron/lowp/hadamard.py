"""Random Hadamard transform (RHT): a seeded random-sign diagonal times a normalised Hadamard, in tiles.

NVFP4 training applies a 16x16 RHT to both operands of the weight-gradient GEMM along the token
dimension (arXiv 2509.25149 §4.2): outliers are spread over 16 tokens before 4-bit quantization, and since
R Rᵀ = I the product dW = dYᵀ X is unchanged, (dYᵀ R)(Xᵀ R)ᵀ = dYᵀ R Rᵀ X = dYᵀ X, tile by tile.
"""

from __future__ import annotations

import torch

# Transformer Engine's fixed wgrad sign vector (transformer_engine/pytorch/tensor/nvfp4_tensor.py);
# the paper uses one fixed vector for all layers and the whole run.
TE_SIGNS = (1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1)


def hadamard(n: int) -> torch.Tensor:
    """Sylvester Hadamard matrix H[i, j] = (-1)^popcount(i & j), n a power of two; H Hᵀ = n I."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    i = torch.arange(n)
    bits = (i[:, None] & i[None, :]).to(torch.int64)
    parity = torch.zeros_like(bits)
    while bool(bits.any()):
        parity ^= bits & 1
        bits >>= 1
    return (1 - 2 * parity).to(torch.float32)


def random_signs(n: int, seed: int | None) -> torch.Tensor:
    """n random ±1 from `seed`; seed None gives TE's fixed 16-vector (n must then be 16)."""
    if seed is None:
        if n != len(TE_SIGNS):
            raise ValueError(f"TE's fixed sign vector has 16 entries; pass a seed for size {n}")
        return torch.tensor(TE_SIGNS, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(torch.float32)


def rht_matrix(n: int = 16, seed: int | None = None) -> torch.Tensor:
    """R = diag(signs) H_n / sqrt(n): orthogonal, entries ±1/sqrt(n) (±0.25 for n=16, exact in bf16)."""
    return random_signs(n, seed)[:, None] * hadamard(n) / n**0.5


def rht(a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Apply R to each consecutive `n`-chunk of a's last dim: (a.reshape(-1, n) @ R), in fp32.

    The last dim is zero-padded to a multiple of n (padding tokens add nothing to a GEMM over that dim);
    the result keeps the padding and is returned in a's dtype (bf16 in, bf16 out, as TE's RHT output).
    """
    n = r.shape[0]
    pad = (-a.shape[-1]) % n
    af = a.to(torch.float32)
    if pad:
        af = torch.nn.functional.pad(af, (0, pad))
    out = (af.reshape(-1, n) @ r.to(af.device)).reshape(af.shape)
    return out.to(a.dtype)
