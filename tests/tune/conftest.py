"""Shared fixtures for hytron.tune: a small packed corpus (vocab 512, so it fits the hytron-tiny preset)."""

import pytest
import torch

from tests.fixtures.threads import one_thread_per_test  # noqa: F401 - autouse: one torch thread
from tests.train.conftest import pack_corpus


@pytest.fixture(scope="session")
def packed_corpus(tmp_path_factory):
    """(packed dir, tokenizer): the training tests' synthetic corpus, 10% held out."""
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


def calib_batches(packed, n=4, seq_len=64, batch_size=4):
    from hytron.packing import iter_eval_batches

    return list(iter_eval_batches(packed, seq_len, batch_size, split="train", max_batches=n))


def load(model_dir):
    from hytron.model import HybridLM

    return HybridLM.from_pretrained(model_dir).eval()


def tune_optim(**kw):
    """A tuning run's optimizer settings (cosine decay, no weight decay) with the test's lr and warmup."""
    from hytron.train.recipe import OptimSpec

    return OptimSpec(schedule="cosine", weight_decay=0.0, **kw)
