"""Infer fixtures: one torch thread (tiny models run fastest that way, and the CI machine's 2 cores are shared), a
tiny random model over a 96-token vocabulary, and prompts for it."""

import pytest
import torch

from hytron.model import HybridConfig, HybridLM
from tests.conftest import randomize
from tests.fixtures.threads import package_one_thread  # noqa: F401 - autouse: one torch thread


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize(HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=96)).eval())


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(16, 96, (int(torch.randint(1, 30, (), generator=g)),), generator=g).tolist()
            for _ in range(n)]
