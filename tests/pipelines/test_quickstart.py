"""`hytron quickstart --size ci`: every stage runs end to end and a usable model directory comes out."""

import json

import pytest
import torch

from hytron.cli import main
from hytron.model import HybridLM
from hytron.tokenizer import Tokenizer


@pytest.mark.slow
def test_quickstart_ci_size_end_to_end_then_resumes_as_a_no_op(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--size", "ci", "--out", str(out), "--steps", "24"]) == 0
    printed = capsys.readouterr().out
    assert "hytron chat" in printed and "hytron serve" in printed
    result = json.loads((out / "quickstart.json").read_text())
    pre = result["pretrain"]
    assert pre["status"] == "finished" and pre["step"] == 24
    assert 0 < result["curation"]["kept_docs"] < result["curation"]["input_docs"]
    assert result["eval"]["tasks.world_qa.n"] > 0 and 0 < result["eval"]["tasks.validation.bpb"] < 10
    assert (out / "run" / "report.html").is_file() and "<svg" in (out / "run" / "report.html").read_text()
    assert (out / "run" / "model" / "README.md").is_file() and (out / "run" / "model" / "DATA_CARD.md").is_file()
    losses = [json.loads(line)["loss"] for line in (out / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] - 1.0

    model_dir = out / "run" / "model"
    model = HybridLM.from_pretrained(model_dir)
    tok = Tokenizer.load(model_dir)
    ids = torch.tensor([[tok.bos_id, *tok.encode("The")]])
    with torch.no_grad():
        assert torch.isfinite(model(ids)).all()

    # a second run finds every stage complete and redoes nothing
    mtime = (model_dir / "model.safetensors").stat().st_mtime
    assert main(["quickstart", "--size", "ci", "--out", str(out), "--steps", "24"]) == 0
    assert (model_dir / "model.safetensors").stat().st_mtime == mtime
