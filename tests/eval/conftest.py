"""Eval fixtures: a real tiny run (TinyWeb -> curate -> pack -> pre-train), built once per session."""

import pytest

from tests.eval.tinyrun import build_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("evalrun"), steps=6)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a loaded 2-core CI machine two OpenMP workers fight other jobs and run 3-10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
