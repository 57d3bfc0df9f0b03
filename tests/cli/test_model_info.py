"""`hytron model-info` and `hytron demo` as a user runs them."""

import re
import subprocess
import sys

from hytron.cli import main


def test_model_info_reports_params_pattern_and_memory(capsys):
    assert main(["model-info", "nano-9b-v2", "--context", "131072"]) == 0
    out = capsys.readouterr().out
    assert "8,888,227,328 total" in out
    assert "M-M-M-MM-M-M-M*-" in out
    assert re.search(r"^\s*KV cache\s+2\.00 GiB", out, re.M) and "SSM state" in out  # meaning, not spacing


def test_model_info_gives_super_memory_at_one_million_tokens(capsys):
    """Nemotron 3 Super at 1M context (its model card's claim): 8 attention layers x 2 KV heads x 128 x 2 (K, V)
    x 2 bytes = 8 KiB per token -> 8 GiB of KV cache; the 40 Mamba layers' state stays 160 MiB; the MTP head's
    one attention layer adds 1 GiB while it drafts."""
    assert main(["model-info", "nemotron-3-super-120b-a12b", "--context", "1048576"]) == 0
    out = capsys.readouterr().out
    assert "120,668,687,360 total" in out and "12,770,216,960 active" in out
    assert "1024-wide latent (LatentMoE)" in out and "2,942,324,736 params" in out
    assert re.search(r"^\s*KV cache\s+8\.00 GiB", out, re.M) and re.search(r"^\s*SSM state\s+160\.00 MiB", out, re.M)
    assert re.search(r"^\s*total\s+8\.16 GiB", out, re.M) and re.search(r"^\s*\+ MTP head\s+1\.00 GiB", out, re.M)


def test_model_info_lists_presets_by_weight_class(capsys):
    assert main(["model-info"]) == 0
    out = capsys.readouterr().out
    for cls in ("nano:", "super:", "ultra:", "tiny:"):
        assert cls in out


def test_model_info_on_a_model_directory(tmp_path, capsys, tiny):
    tiny.save_pretrained(tmp_path)
    assert main(["model-info", str(tmp_path), "--context", "1000"]) == 0
    assert "M-M*-M-" in capsys.readouterr().out


def test_unknown_preset_is_a_clear_error_not_a_traceback():
    r = subprocess.run([sys.executable, "-m", "hytron", "model-info", "nano-9b"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown model preset 'nano-9b'" in r.stderr and "Traceback" not in r.stderr


def test_demo_runs_and_reloads_identically(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "m")]) == 0
    assert "reload identical: True" in capsys.readouterr().out
    assert (tmp_path / "m" / "model.safetensors").is_file()
