"""The customization verbs end to end on a tiny model: prune to a target, distil, LoRA + merge."""

import json

import pytest
import torch

from hytron.cli import main
from hytron.model import HybridLM

pytestmark = pytest.mark.slow  # each verb trains and writes model directories


def test_prune_verb_hits_the_target_and_distils(trained_tiny, packed_data, tmp_path, capsys):
    n = HybridLM.from_pretrained(trained_tiny).num_params()
    target = int(0.75 * n)
    rc = main(["prune", str(trained_tiny), "--target-params", str(target), "--data", str(packed_data), "--out",
               str(tmp_path / "p"), "--calib-batches", "2", "--candidates", "3", "--distill-steps", "4",
               "--seq-len", "64", "--batch-size", "4", "--threads", "1"])
    assert rc == 0
    report = json.loads((tmp_path / "p" / "prune.json").read_text())
    assert abs(report["params_after"] - target) <= 0.02 * target
    assert report["distill"]["step"] == 4 and len(report["candidates"]) == 3
    pruned = HybridLM.from_pretrained(tmp_path / "p" / "model")
    assert (tmp_path / "p" / "model" / "tokenizer.json").is_file()
    with torch.no_grad():
        assert torch.isfinite(pruned(torch.randint(0, 300, (1, 16)))).all()


def test_lora_then_merge_verbs(trained_tiny, packed_data, tmp_path):
    rc = main(["lora", str(trained_tiny), "--data", str(packed_data), "--out", str(tmp_path / "l"), "--steps", "5",
               "--seq-len", "32", "--batch-size", "4", "--eval-batches", "1", "--merge", "--threads", "1"])
    assert rc == 0
    assert (tmp_path / "l" / "adapter" / "adapter_config.json").is_file()
    assert main(["merge", str(trained_tiny), str(tmp_path / "l" / "adapter"), "--out", str(tmp_path / "m")]) == 0
    a, b = HybridLM.from_pretrained(tmp_path / "l" / "model"), HybridLM.from_pretrained(tmp_path / "m")
    x = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_prune_verb_error_is_one_line(trained_tiny, packed_data, tmp_path, capsys):
    rc = main(["prune", str(trained_tiny), "--target-params", "1000", "--data", str(packed_data), "--out",
               str(tmp_path / "p"), "--calib-batches", "1", "--seq-len", "32", "--batch-size", "2"])
    assert rc == 2
    assert "no pruning plan" in capsys.readouterr().err
