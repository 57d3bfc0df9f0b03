"""`hytron lora` under torchrun with 2 CPU processes (gloo): DDP and FSDP2 runs of the same recipe follow the
single-process run with the same global batch, frozen base and all, and write the same adapter."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hytron.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # three LoRA runs, two of them in two processes each

STEPS = 4


def _lora(model, data, out, *, distributed="none", nproc=1):
    """The shipped recipe at a global batch of 8 sequences (and 16 held-out ones), over `nproc` processes."""
    args = ["lora", "lora", "--set", f"model.init_from={model}", "--set", f"data.path={data}", "--set",
            f"out_dir={out}", "--set", f"steps={STEPS}", "--set", "log_every=1", "--set", "data.seq_len=64",
            "--set", f"data.batch_size={8 // nproc}", "--set", f"eval_batches={2 * nproc}", "--set", "merge=false",
            "--set",
            f"distributed={distributed}", "--set", "device=cpu", "--set", "threads=1", "--no-progress"]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    r = subprocess.run([sys.executable, *launcher, "-m", "hytron", *args], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = read_metrics(out / "run" / "metrics.jsonl")
    losses = [rec["loss"] for rec in records if "loss" in rec]
    return losses, records[-1]["val_loss"], load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def single(trained_tiny, packed_data, tmp_path_factory):
    return _lora(trained_tiny, packed_data, tmp_path_factory.mktemp("lora-single"))


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_process_lora_matches_single_process(mode, single, trained_tiny, packed_data, tmp_path):
    losses, val_loss, adapter = _lora(trained_tiny, packed_data, tmp_path / mode, distributed=mode, nproc=2)
    ref_losses, ref_val_loss, ref_adapter = single
    assert len(losses) == len(ref_losses) == STEPS
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 2e-5, (losses, ref_losses)
    assert abs(val_loss - ref_val_loss) <= 2e-5  # the final evaluation on the same 16 held-out sequences
    assert adapter.keys() == ref_adapter.keys()  # every rank's shard gathered into one PEFT file
    assert max(float((adapter[k] - ref_adapter[k]).abs().max()) for k in adapter) <= 1e-5
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # the adapters trained
    assert all(v.dtype == torch.float32 for v in adapter.values())
