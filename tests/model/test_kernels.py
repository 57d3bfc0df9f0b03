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


@pytest.mark.slow
def test_torch_compiled_scan_matches_reference():
    g = torch.Generator().manual_seed(0)
    b, L, H, P, G, N = 2, 40, 4, 8, 2, 8
    x, B, C = torch.randn(b, L, H, P, generator=g), torch.randn(b, L, G, N, generator=g), torch.randn(
        b, L, G, N, generator=g)
    dt, A = torch.rand(b, L, H, generator=g), -torch.rand(H, generator=g)
    h0 = torch.randn(b, H, P, N, generator=g)
    compiled = torch.compile(ssd_chunked, dynamic=False)
    y, s = compiled(x, dt, A, B, C, 16, h0)
    y_ref, s_ref = ssd_chunked(x, dt, A, B, C, 16, h0)
    assert torch.allclose(y, y_ref, atol=1e-5) and torch.allclose(s, s_ref, atol=1e-5)


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
