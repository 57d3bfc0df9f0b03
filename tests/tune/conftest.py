"""Helpers for hytron.tune's tests; the packed corpus and the trained tiny model are tests/conftest.py's."""

from tests.fixtures.threads import one_thread_per_test  # noqa: F401 - autouse: one torch thread


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
