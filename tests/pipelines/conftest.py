"""The pipelines' tests run with one torch thread each."""

from tests.fixtures.threads import one_thread_per_test  # noqa: F401 - autouse: one torch thread
