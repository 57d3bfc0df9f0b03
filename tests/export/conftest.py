"""Fixtures for export tests: small hytron model directories (dense and MoE) and llama-cpp-python."""

import importlib
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from hytron.model import HybridConfig, HybridLM
from hytron.tokenizer import Tokenizer
from tests.conftest import randomize

ROOT = Path(__file__).resolve().parents[2]
# real text shipped with Python (prose, code, numbers) to train the BPE on
_CORPUS_MODULES = ("json/decoder.py", "textwrap.py", "argparse.py", "difflib.py", "csv.py", "this.py")


def stdlib_texts() -> list[str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    return [(lib / m).read_text(encoding="utf-8") for m in _CORPUS_MODULES if (lib / m).is_file()]


def make_model_dir(path: Path, preset: str, vocab_size: int, seed: int) -> Path:
    """A hytron model directory as `hytron train` leaves it: config.json, safetensors, tokenizer files."""
    torch.manual_seed(seed)
    tok = Tokenizer.train(stdlib_texts(), vocab_size=vocab_size)
    model = randomize(HybridLM(HybridConfig.from_name(preset, vocab_size=vocab_size)).eval(), seed=seed)
    model.save_pretrained(path, tokenizer=tok)
    return path


@pytest.fixture(scope="session")
def dense_dir(tmp_path_factory):
    # the quickstart's shape (hytron-small: M-M-M*-M-M-, 4k vocab)
    return make_model_dir(tmp_path_factory.mktemp("dense"), "hytron-small", 4096, seed=1)


@pytest.fixture(scope="session")
def moe_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("moe"), "hytron-tiny-moe", 512, seed=2)


@pytest.fixture(scope="session")
def llama_cpp():
    """llama-cpp-python, built once into the wheel cache by .ci/llama-cpp-wheel when it is not installed."""
    try:
        return importlib.import_module("llama_cpp")
    except ImportError:
        pass
    missing = [t for t in ("cc", "c++", "cmake") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"llama-cpp-python is not installed and cannot be built here (no {', '.join(missing)})")
    script = ROOT / ".ci" / "llama-cpp-wheel"
    done = subprocess.run(["bash", str(script)], env={**__import__("os").environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    importlib.invalidate_caches()
    return importlib.import_module("llama_cpp")
