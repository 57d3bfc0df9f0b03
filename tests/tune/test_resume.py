"""The tuning loop (LoRA, distillation) stopped by SIGTERM resumes to exactly the run that was never stopped."""

import pytest

from hytron.tune import LoRAConfig, TuneConfig, apply_lora, finetune, packed_batches, packed_eval_batches
from tests.conftest import losses
from tests.tune.conftest import load
from tests.tune.conftest import tune_optim as _optim

pytestmark = pytest.mark.slow  # three tuning runs per case


def _run(kind, trained_tiny, packed_data, out):
    model = load(trained_tiny)
    teacher = None
    if kind == "lora":
        apply_lora(model, LoRAConfig(r=4, alpha=8))
    else:  # distil the trained model into a fresh copy of itself with other weights
        teacher, model = model, load(trained_tiny)
        for p in model.parameters():
            p.data.mul_(0.9)
    cfg = TuneConfig(out_dir=str(out), steps=6, optim=_optim(lr=3e-3, warmup_steps=1), log_every=1, checkpoint_every=0)
    return model, finetune(model, packed_batches(packed_data, 32, 4, seed=2), cfg, teacher=teacher,
                           eval_batches=packed_eval_batches(packed_data, 32, 4, 1), progress=False)


@pytest.mark.parametrize("kind", ["lora", "distill"])
def test_tuning_stopped_by_sigterm_resumes_bit_for_bit(kind, trained_tiny, packed_data, tmp_path, sigterm_at):
    straight, whole = _run(kind, trained_tiny, packed_data, tmp_path / "straight")
    sigterm_at(3)
    _, stopped = _run(kind, trained_tiny, packed_data, tmp_path / "stopped")
    assert stopped["message"].startswith("interrupted by signal 15; checkpoint saved at step 3")
    sigterm_at(None)
    resumed, again = _run(kind, trained_tiny, packed_data, tmp_path / "stopped")
    assert again["status"] == "finished" and again["before"] == whole["before"] and again["after"] == whole["after"]
    assert losses(tmp_path / "stopped") == losses(tmp_path / "straight") and len(losses(tmp_path / "straight")) == 6
    assert all((a == b).all() for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
