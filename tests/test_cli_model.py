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
