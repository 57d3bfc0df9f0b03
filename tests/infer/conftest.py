"""Infer fixtures: one torch thread (tiny models run fastest that way, and the CI machine's 2 cores are shared)."""

from tests.fixtures.threads import package_one_thread  # noqa: F401 - autouse: one torch thread


