"""Shared TinyWeb corpora and curated outputs (built once per session; the 20k run is the acceptance run)."""

from __future__ import annotations

import pytest

from hytron.data import tinyweb
from hytron.data.curate_config import CurateConfig
from hytron.data.pipeline import curate


def small_config(**executor) -> CurateConfig:
    """Many small shards so sharding, resume and executors have real work to split."""
    cfg = CurateConfig()
    cfg.input.shard_bytes = 64_000
    cfg.quality.sample_docs = 600
    cfg.executor.workers = executor.get("workers", 1)
    cfg.executor.kind = executor.get("kind", "local")
    return cfg


@pytest.fixture(scope="session")
def make_config():
    return small_config


@pytest.fixture(scope="session")
def tinyweb_20k(tmp_path_factory):
    out = tmp_path_factory.mktemp("tinyweb20k")
    tinyweb.generate(out, 20_000, seed=0)
    return out


@pytest.fixture(scope="session")
def curated_20k(tinyweb_20k, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated20k")
    cfg = CurateConfig()
    cfg.executor.workers = 2
    manifest = curate([tinyweb_20k], out, cfg, progress=False)
    return out, manifest


@pytest.fixture(scope="session")
def tinyweb_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("tinyweb2k")
    tinyweb.generate(out, 2_000, seed=3)
    return out


@pytest.fixture(scope="session")
def curated_small(tinyweb_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated2k")
    return out, curate([tinyweb_small], out, small_config(), progress=False)
