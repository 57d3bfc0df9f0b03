"""Tuning goes through pre-training's setup: device, precision and dtypes of everything a LoRA run holds.

The same `lora_plumbing_checks` runs here on CPU under `precision: bf16` (bf16 autocast on every device) and in
tests/gpu on CUDA under `auto`: a bf16 checkpoint stays bf16 (no fp32 copy of the frozen base), the adapters
and their AdamW state are fp32 masters on the run's device, only the adapters move, and a paused run resumes
to the same weights as a straight one."""

import json

import pytest
import torch

from hytron.config import ConfigError
from hytron.model import HybridLM
from hytron.tune import LoRAConfig, TuneConfig, apply_lora, finetune, packed_batches, packed_eval_batches
from hytron.tune.finetune import tune_device
from tests.conftest import tiny_model
from tests.tune.conftest import tune_optim


def lora_plumbing_checks(model_dir, packed_data, tmp_path, *, device: str, precision: str) -> None:
    cfg = TuneConfig(out_dir=str(tmp_path / "straight"), steps=6, device=device, precision=precision,
                     optim=tune_optim(lr=5e-3, warmup_steps=1), log_every=1, checkpoint_every=0)
    dev = tune_device(cfg)
    assert cfg.weights_dtype(dev) == torch.bfloat16

    def run(out, **kw):
        model = HybridLM.from_pretrained(model_dir, dtype=cfg.weights_dtype(dev))
        torch.manual_seed(1)  # the adapters' initialisation: the same in every run
        apply_lora(model, LoRAConfig(r=4, alpha=8))
        base = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" not in n}
        c = TuneConfig(**{**cfg.__dict__, "out_dir": str(out)})
        result = finetune(model, packed_batches(packed_data, 32, 4, seed=2), c,
                          eval_batches=packed_eval_batches(packed_data, 32, 4, 1), progress=False, **kw)
        return model, base, result

    model, base, result = run(tmp_path / "straight")
    for name, p in model.named_parameters():
        assert p.device.type == dev.type, name
        if ".lora_" in name:  # trained: fp32 masters
            assert p.dtype == torch.float32 and p.requires_grad, name
        else:  # frozen: the checkpoint's bf16, untouched
            assert p.dtype == torch.bfloat16 and not p.requires_grad, name
            assert torch.equal(p.cpu(), base[name].cpu()), name
    assert any(not torch.equal(m.lora_B, torch.zeros_like(m.lora_B)) for m in model.modules()
               if hasattr(m, "lora_B"))
    assert result["after"]["val_loss"] < result["before"]["val_loss"]
    # the optimizer state the checkpoint holds: fp32, one pair of moments per adapter tensor, nothing else
    ckpt = sorted((tmp_path / "straight" / "checkpoints").glob("step-*"))[-1]
    from safetensors.torch import load_file

    state = load_file(str(ckpt / "optimizer.safetensors"))
    assert state and all(t.dtype == torch.float32 for k, t in state.items() if "exp_avg" in k)
    # paused after 3 steps, resumed: the same adapters as the straight run
    run(tmp_path / "paused", max_steps_this_run=3)
    resumed, _, again = run(tmp_path / "paused")
    assert again["status"] == "finished"
    for (n, a), b in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["precision"] == precision and config["device"] == device


@pytest.fixture
def bf16_checkpoint(tmp_path):
    torch.manual_seed(0)
    return tiny_model().to(torch.bfloat16).save_pretrained(tmp_path / "bf16-model")


def test_lora_in_bf16_on_cpu_keeps_base_bf16_and_adapters_fp32(bf16_checkpoint, packed_data, tmp_path):
    lora_plumbing_checks(bf16_checkpoint, packed_data, tmp_path, device="cpu", precision="bf16")


def test_tuning_refuses_pretraining_only_precisions():
    with pytest.raises(ConfigError, match="precision: tuning runs in auto, fp32, bf16, got 'nvfp4'"):
        TuneConfig(precision="nvfp4")
    cpu = torch.device("cpu")
    assert TuneConfig().autocast(cpu) is None and TuneConfig().weights_dtype(cpu) == torch.float32
    assert TuneConfig().autocast(torch.device("cuda")) == torch.bfloat16
