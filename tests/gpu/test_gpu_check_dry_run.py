"""The prepared GPU check runs end to end on CPU (`bench/gpu.sh --dry-run`): every stage, every output field.

A GPU session then only has to run `bash bench/gpu.sh --out DIR` once. This runs the real script in a
subprocess at tiny sizes and checks the files it writes, not a mock of them.
"""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["env", "peak", "tests", "train", "decode", "hybrid"]
TRAIN = ["hytron-bf16", "transformers-bf16", "hytron-fp8", "hytron-nvfp4", "hytron-lora-bf16", "hytron-bf16-compiled"]


@pytest.mark.slow
def test_gpu_check_dry_run_executes_every_stage_and_writes_every_field(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", "bench/gpu.sh", "--dry-run", "--out", str(out), "--budget", "900"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= {"summary.json", "summary.md", "run.log", "tests.log"}
    s = json.loads((out / "summary.json").read_text())
    assert s["finished"] and s["meta"]["dry_run"] and s["meta"]["device"] == "cpu"
    assert list(s["stages"]) == STAGES
    for name, stage in s["stages"].items():
        assert stage["status"] == "ok", (name, stage["error"], stage.get("traceback"))
        assert stage["seconds"] > 0 and stage["peak_mem_gib"] > 0

    st = {k: v["result"] for k, v in s["stages"].items()}
    assert st["env"]["torch"] and "mamba_ssm" in st["env"]["kernels"]
    assert st["peak"]["matmul_tflops"] > 0 and st["peak"]["copy_gb_s"] > 0
    # the gpu tests are collected and (without CUDA) skipped, none failed
    assert st["tests"]["tests"] >= 10 and st["tests"]["failed"] == [] and st["tests"]["returncode"] == 0

    train = st["train"]["variants"]
    assert list(train) == TRAIN
    for name, v in train.items():
        assert "error" not in v, (name, v)
        assert v["tok_s"] > 0 and v["timed_steps"] >= 1 and 0 < v["mfu_vs_989"] < v["mfu_vs_measured_matmul"]
    for key in ("ratio_hytron_vs_transformers", "best_bf16_mfu_vs_989", "ratio_fp8_vs_bf16",
                "nvfp4_emulation_overhead", "ratio_lora_vs_full_bf16"):
        assert st["train"][key] > 0, key

    rows = st["decode"]["rows"]
    assert list(rows) == ["1", "8", "32", "128"]
    for batch, row in rows.items():
        runners = ["hytron_graph", "transformers", "hytron_engine"] + (["hytron_eager"] if batch == "1" else [])
        for r in runners:
            assert row[r].get("tok_s", 0) > 0, (batch, r, row[r])
        # same weights, fp32 on CPU: hytron decodes the greedy tokens transformers decodes
        assert row["same_tokens_fraction_vs_transformers"] >= 0.9  # a near-tie may flip one token
        assert row["hytron_graph"]["decode_only_tok_s"] > 0
    for batch in (8, 32, 128):
        assert st["decode"][f"ratio_batched_vs_sequential_{batch}"] > 0

    points = st["hybrid"]["points"]
    assert list(points) == [str(c) for c in s["config"]["contexts"]]
    for p in points.values():
        assert p["ratio"] > 0 and p["attention"]["state_mib_per_seq"] > p["hybrid"]["state_mib_per_seq"]

    assert set(s["goals"]) == {"train_vs_transformers", "mfu_bf16", "fp8_vs_bf16", "batched_vs_sequential_32",
                               "hybrid_vs_attention_longest"}
    for g in s["goals"].values():
        assert g["value"] is not None and g["met"] in (True, False)
    md = (out / "summary.md").read_text()
    assert "| goal | target | value | met |" in md and "hytron-nvfp4" in md and "| 128 | hytron_engine |" in md
