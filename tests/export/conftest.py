"""Fixtures for export tests: small hytron model directories (dense and MoE) and llama-cpp-python."""

import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
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


def make_model_dir(path: Path, preset: str, vocab_size: int, seed: int, **overrides) -> Path:
    """A hytron model directory as `hytron train` leaves it: config.json, safetensors, tokenizer files."""
    torch.manual_seed(seed)
    tok = Tokenizer.train(stdlib_texts(), vocab_size=vocab_size)
    model = randomize(HybridLM(HybridConfig.from_name(preset, vocab_size=vocab_size, **overrides)).eval(), seed=seed)
    if overrides.get("moe_latent_size"):  # routed experts and latent projections at fan-in scale: at init they add
        with torch.no_grad():  # ~1e-4 to the output, so a wrong latent projection would hide under the tolerance
            for name, p in model.named_parameters():
                if ".experts." in name or "latent_proj" in name:
                    p.normal_(0.0, p.size(-1) ** -0.5)
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
def latent_moe_dir(tmp_path_factory):
    """LatentMoE (Nemotron 3 Super's experts): routed experts in a 16-wide latent of the 128-wide stream."""
    return make_model_dir(tmp_path_factory.mktemp("latent"), "hytron-tiny-moe", 512, seed=3, moe_latent_size=16)


@pytest.fixture(scope="session")
def llama_cpp(request):
    """llama-cpp-python when installed (`.ci/run` builds it into the wheel cache before the tests).

    Building it compiles llama.cpp (about 8 minutes on 2 cores), so pytest never does that silently: without
    the package these tests skip and say how to get it, and with HYTRON_BUILD_LLAMA_CPP=1 the build runs
    here, announced on the terminal with its duration."""
    try:
        return importlib.import_module("llama_cpp")
    except ImportError:
        pass
    script = ROOT / ".ci" / "llama-cpp-wheel"
    if os.environ.get("HYTRON_BUILD_LLAMA_CPP") != "1":
        pytest.skip(f"llama-cpp-python is not installed: run {script.relative_to(ROOT)} (builds and caches the "
                    "wheel, ~8 min) or set HYTRON_BUILD_LLAMA_CPP=1 to build it from pytest")
    missing = [t for t in ("cc", "c++", "cmake") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"llama-cpp-python is not installed and cannot be built here (no {', '.join(missing)})")
    say = request.config.pluginmanager.get_plugin("terminalreporter").write_line
    say(f"building llama-cpp-python with {script.relative_to(ROOT)} (about 8 min on 2 cores; cached afterwards)")
    t0 = time.monotonic()
    done = subprocess.run(["bash", str(script)], env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    say(f"llama-cpp-python built in {time.monotonic() - t0:.0f} s")
    importlib.invalidate_caches()
    return importlib.import_module("llama_cpp")
