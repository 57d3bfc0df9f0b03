"""Claim-test fixtures."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a loaded 2-core CI machine two OpenMP workers fight other jobs and run 3-10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
