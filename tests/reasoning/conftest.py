"""Reasoning fixtures: a small BPE tokenizer trained on reasoning rows, tiny random models, one torch thread."""

import pytest

from hytron.reasoning.data import sft_rows
from hytron.reasoning.tasks import generate_problems
from hytron.tokenizer import Tokenizer
from tests.fixtures.threads import package_one_thread  # noqa: F401 - autouse: one torch thread


def row_text(row: dict) -> str:
    return "\n".join(m["content"] + "\n" + m.get("reasoning_content", "") for m in row["messages"])


@pytest.fixture(scope="package")
def rows():
    return sft_rows(generate_problems(["arithmetic", "world", "ordering"], 120, seed=0), "verbose", seed=0,
                    off_share=0.2, truncated_share=0.1)


@pytest.fixture(scope="package")
def tok(rows, tmp_path_factory):
    tok = Tokenizer.train([row_text(r) for r in rows], vocab_size=400)
    path = tmp_path_factory.mktemp("tok")
    tok.save(path)
    return Tokenizer.load(path)


@pytest.fixture(scope="package")
def tok_dir(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokdir")
    tok.save(path)
    return path
