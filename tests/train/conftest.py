"""A small packed TinyWeb dataset shared by the training tests (built once per session)."""

import json
import random

import pytest

from hytron.data.mix import single_component_blend
from hytron.packing import iter_texts, pack
from hytron.tokenizer import Tokenizer

NAMES = ["Ada", "Brin", "Cora", "Dax", "Elm", "Fen", "Gil", "Hob"]
PLACES = ["the river town", "the hill fort", "the salt market", "the old mill"]
VERBS = ["walked to", "traded in", "wrote about", "lived near"]


def corpus_docs(n: int = 400, seed: int = 0) -> list[dict]:
    """A fixed little corpus with learnable structure (kept here, not taken from TinyWeb, so the golden
    losses depend only on the tokenizer, packing, model and training code)."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        sents = [f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(PLACES)}. {a} plus {b} is {a + b}."
                 for a, b in ((rng.randint(1, 20), rng.randint(1, 20)) for _ in range(rng.randint(2, 6)))]
        docs.append({"id": f"d{i}", "text": " ".join(sents), "source": "synthetic", "quality_bucket": 4})
    return docs


def pack_corpus(root, n_docs: int = 400):
    """(packed dir, tokenizer): `corpus_docs(n_docs)` with a 512-id BPE tokenizer, 10% held out."""
    (root / "kept").mkdir()
    (root / "kept" / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus_docs(n_docs)))
    tok = Tokenizer.train(iter_texts([root / "kept"]), vocab_size=512)
    pack(single_component_blend([str(root / "kept")], validation_fraction=0.1), tok, root / "packed")
    return root / "packed", tok


@pytest.fixture(scope="session")
def packed_tinyweb(tmp_path_factory):
    return pack_corpus(tmp_path_factory.mktemp("corpus"))[0]


def tiny_recipe(data_path, out_dir, **changes):
    """A TrainConfig for the ~0.5M-param tiny preset that runs a step in well under a second on CPU."""
    from hytron.config import from_dict
    from hytron.train.recipe import TrainConfig

    data = {"name": "test", "out_dir": str(out_dir), "steps": 12, "seed": 0, "log_every": 1, "eval_every": 6,
            "eval_batches": 2, "checkpoint_every": 4, "threads": 1,
            "model": {"preset": "hytron-tiny"},
            "data": {"path": str(data_path), "seq_len": 64, "batch_size": 4},
            "optim": {"lr": 3e-3, "warmup_steps": 2}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[key] = value
    return from_dict(TrainConfig, data)
