"""The customization verbs end to end on a tiny model: prune to a target, distil, LoRA + merge."""

import json

import pytest
import torch

from hytron.cli import main
from hytron.model import HybridLM

pytestmark = pytest.mark.slow  # each verb trains and writes model directories


def _on(model, data, out) -> list[str]:
    """The shipped recipe pointed at a model, data and output folder (one thread, no progress bar)."""
    return ["--set", f"model.init_from={model}", "--set", f"data.path={data}", "--set", f"out_dir={out}",
            "--set", "threads=1", "--no-progress"]


def test_prune_verb_hits_the_target_and_distils(trained_tiny, packed_data, tmp_path, capsys):
    n = HybridLM.from_pretrained(trained_tiny).num_params()
    target = int(0.75 * n)
    rc = main(["prune", "prune", *_on(trained_tiny, packed_data, tmp_path / "p"), "--set", f"target_params={target}",
               "--set", "calib_batches=2", "--set", "candidates=3", "--set", "steps=4", "--set", "data.seq_len=64",
               "--set", "data.batch_size=4"])
    assert rc == 0
    report = json.loads((tmp_path / "p" / "prune.json").read_text())
    assert abs(report["params_after"] - target) <= 0.02 * target
    assert report["distill"]["step"] == 4 and len(report["candidates"]) == 3
    pruned = HybridLM.from_pretrained(tmp_path / "p" / "model")
    assert (tmp_path / "p" / "model" / "tokenizer.json").is_file()
    with torch.no_grad():
        assert torch.isfinite(pruned(torch.randint(0, 300, (1, 16)))).all()


def test_lora_then_merge_verbs(trained_tiny, packed_data, tmp_path):
    rc = main(["lora", "lora", *_on(trained_tiny, packed_data, tmp_path / "l"), "--set", "steps=5", "--set",
               "data.seq_len=32", "--set", "data.batch_size=4", "--set", "eval_batches=1"])
    assert rc == 0
    assert (tmp_path / "l" / "adapter" / "adapter_config.json").is_file()
    assert main(["merge", str(trained_tiny), str(tmp_path / "l" / "adapter"), "--out", str(tmp_path / "m")]) == 0
    a, b = HybridLM.from_pretrained(tmp_path / "l" / "model"), HybridLM.from_pretrained(tmp_path / "m")
    x = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_prune_verb_error_is_one_line(trained_tiny, packed_data, tmp_path, capsys):
    rc = main(["prune", "prune", *_on(trained_tiny, packed_data, tmp_path / "p"), "--set", "target_params=1000",
               "--set", "calib_batches=1", "--set", "data.seq_len=32", "--set", "data.batch_size=2"])
    assert rc == 2
    assert "no pruning plan" in capsys.readouterr().err
