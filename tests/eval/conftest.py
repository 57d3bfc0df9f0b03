"""Eval fixtures: a real tiny run (TinyWeb -> curate -> pack -> pre-train), built once per session."""

import pytest

from tests.eval.tinyrun import build_tiny_run
from tests.fixtures.threads import one_thread_per_test  # noqa: F401 - autouse: one torch thread


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("evalrun"), steps=6)


