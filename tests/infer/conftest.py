"""Infer fixtures: one torch thread (tiny models run fastest that way, and the CI machine's 2 cores are shared)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
