"""Shared fixtures: deterministic torch, tiny random models with non-trivial SSM parameters."""

import pytest
import torch

from hytron.model import HybridConfig, HybridLM


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def randomize(model: HybridLM, seed: int = 0) -> HybridLM:
    """Perturb parameters that default init leaves symmetric (A, D, dt_bias, norms, router bias),
    so that tests cannot pass by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.empty_like(p).uniform_(-1, 2, generator=g))
            elif name.endswith(("D", "dt_bias")):
                p.copy_(torch.randn(p.shape, generator=g))
            elif "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
    return model


def tiny_model(preset: str = "hytron-tiny", **overrides) -> HybridLM:
    return randomize(HybridLM(HybridConfig.from_name(preset, **overrides)).eval())


@pytest.fixture
def tiny():
    return tiny_model()


# ---- a small packed corpus and a model trained on it (tuning and the pipelines on top of it) ----
@pytest.fixture(scope="session")
def packed_corpus(tmp_path_factory):
    """(packed dir, tokenizer): the training tests' synthetic corpus (vocab 300, fits hytron-tiny), 10% held out."""
    from tests.train.conftest import pack_corpus

    return pack_corpus(tmp_path_factory.mktemp("tune-corpus"), 300)


@pytest.fixture(scope="session")
def packed_data(packed_corpus):
    return packed_corpus[0]


@pytest.fixture(scope="session")
def trained_tiny(packed_corpus, tmp_path_factory):
    """A hytron-tiny model pre-trained 60 steps on the corpus (so importance and distillation mean something)."""
    from hytron.train.pretrain import pretrain
    from tests.train.conftest import tiny_recipe

    packed, _ = packed_corpus
    out = tmp_path_factory.mktemp("trained-tiny")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(tiny_recipe(packed, out, steps=60, eval_every=0, checkpoint_every=0), progress=False)
    finally:
        torch.set_num_threads(old)
    return out / "model"


# ---- checkpoints written by transformers, one per chat convention (tests/fixtures/foreign.py) ----
@pytest.fixture(scope="session")
def foreign(tmp_path_factory):
    """`foreign(name)` -> a model directory written by transformers: "nemotron3", "nano2" or "plain" (built once)."""
    pytest.importorskip("transformers")
    from tests.fixtures.foreign import BUILDERS

    built: dict = {}

    def get(name: str):
        if name not in built:
            built[name] = BUILDERS[name](tmp_path_factory.mktemp(f"foreign-{name}") / name)
        return built[name]

    return get


@pytest.fixture
def sigterm_at(monkeypatch):
    """`sigterm_at(n)`: the running training loop gets a real SIGTERM right after it logs step n (as a
    preemption would deliver it); call `sigterm_at(None)` to let the next run go undisturbed."""
    import os
    import signal

    from hytron.train.loop import Run

    original = Run.log

    def arm(step):
        def log(self, record, **shown):
            original(self, record, **shown)
            if record["step"] == step:
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(Run, "log", original if step is None else log)

    return arm


def losses(out_dir) -> dict:
    """{step: loss} of a run's metrics.jsonl."""
    from hytron.train.metrics import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(out_dir / "metrics.jsonl") if "loss" in r}


# Heavy end-to-end tests in files that do not mark themselves: `pytest -m "not slow"` (the quick check while
# working) leaves them out; CI runs everything. One table, by node id prefix.
SLOW = (
    "tests/claims/test_claims.py::test_reproduce_hybrid_quick",
    "tests/claims/test_claims.py::test_reproduce_data_quick",
    "tests/claims/test_claims.py::test_reproduce_nvfp4_quick",
    "tests/claims/test_claims.py::test_reproduce_reasoning_quick",
    "tests/data/test_acceptance.py",  # curates the 20,000-document TinyWeb
    "tests/report/test_report.py::test_report_renders_in_headless_chromium",
    "tests/train/test_pretrain.py::test_nvfp4_run_resumes_bit_for_bit",
)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
