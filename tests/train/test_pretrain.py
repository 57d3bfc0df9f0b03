"""Pre-training: loss falls, golden losses, exact resume after kills (even mid-checkpoint), fallback on corruption."""

import json

import pytest
import torch

from hytron.model import HybridLM
from hytron.train import checkpoint as ckpt
from hytron.train.metrics import read_metrics
from hytron.train.pretrain import pretrain
from tests.train.conftest import tiny_recipe


def _losses(out_dir):
    return {r["step"]: r["loss"] for r in read_metrics(out_dir / "metrics.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def reference_run(packed_tinyweb, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    summary = pretrain(tiny_recipe(packed_tinyweb, out), progress=False)
    return out, summary


def test_loss_falls_and_a_model_directory_is_written(reference_run, packed_tinyweb):
    out, summary = reference_run
    losses = _losses(out)
    assert losses[12] < losses[1] - 0.5
    assert summary["status"] == "finished" and summary["val_loss"] > 0 and summary["val_bpb"] > 0
    model = HybridLM.from_pretrained(out / "model")
    assert model.config.vocab_size == json.loads((packed_tinyweb / "index.json").read_text())["vocab_size"]
    assert (out / "model" / "tokenizer.json").is_file() and (out / "config.json").is_file()


# Golden losses of the first steps of the reference run (CPU, fp32, torch 2.13, seed 0). A change that
# alters initialisation, data order or the update rule shows up here.
GOLDEN = {1: 5.9841, 2: 5.3264, 3: 4.7874, 4: 4.3978}


def test_first_losses_match_committed_golden_values(reference_run):
    losses = _losses(reference_run[0])
    for step, want in GOLDEN.items():
        assert losses[step] == pytest.approx(want, abs=2e-3), (step, losses[step])


def test_resume_after_stop_reproduces_losses_bit_for_bit(reference_run, packed_tinyweb, tmp_path):
    cfg = tiny_recipe(packed_tinyweb, tmp_path)
    first = pretrain(cfg, progress=False, max_steps_this_run=5)  # stops after step 5 with a checkpoint
    assert first["message"].startswith("paused at step 5")
    pretrain(cfg, progress=False)
    assert _losses(tmp_path) == _losses(reference_run[0])


def test_crash_while_writing_a_checkpoint_resumes_exactly(reference_run, packed_tinyweb, tmp_path, monkeypatch):
    import safetensors.torch

    cfg = tiny_recipe(packed_tinyweb, tmp_path)
    real_save = safetensors.torch.save_file
    calls = {"n": 0}

    def dying_save(tensors, filename, metadata=None):
        calls["n"] += 1
        if "step-00000008" in filename and filename.endswith("optimizer.safetensors"):
            raise KeyboardInterrupt("simulated power cut half-way through writing checkpoint 8")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, progress=False)
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    pretrain(cfg, progress=False)
    assert _losses(tmp_path) == _losses(reference_run[0])
    assert not list((tmp_path / "checkpoints").glob("*.tmp-*"))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(packed_tinyweb, tmp_path):
    cfg = tiny_recipe(packed_tinyweb, tmp_path, steps=8)
    pretrain(cfg, progress=False, max_steps_this_run=8 - 0)  # finished: checkpoints 4 and 8 kept
    root = tmp_path / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step-00000004", "step-00000008"]
    f = root / "step-00000008" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="fails its checksum"):
        path, _, state = ckpt.load_latest(root)
    assert path.name == "step-00000004" and state["step"] == 4


def test_all_checkpoints_corrupt_is_an_error_not_a_silent_restart(tmp_path):
    root = tmp_path / "checkpoints"
    ckpt.write_checkpoint(root, 1, {"model": {"w": torch.ones(3)}}, {"x": 1})
    (root / "step-00000001" / "trainer.json").write_text("{}")
    with pytest.warns(UserWarning), pytest.raises(ckpt.CheckpointError, match="no usable checkpoint"):
        ckpt.load_latest(root)


def test_resolved_config_and_metrics_are_machine_readable(reference_run):
    out, _ = reference_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["preset"] == "hytron-tiny" and cfg["data"]["seq_len"] == 64
    recs = read_metrics(out / "metrics.jsonl")
    assert any("val_bpb" in r for r in recs) and all("step" in r for r in recs)
    assert all(r["tok_s"] > 0 for r in recs if "tok_s" in r)


def test_continued_pretraining_starts_from_a_model_directory(reference_run, packed_tinyweb, tmp_path):
    out, _ = reference_run
    cfg = tiny_recipe(packed_tinyweb, tmp_path, steps=2, model={"init_from": str(out / "model")})
    pretrain(cfg, progress=False)
    first = _losses(tmp_path)[1]
    assert first < _losses(out)[1] - 0.3  # starts from the trained weights, not from scratch


def test_nvfp4_run_resumes_bit_for_bit_including_stochastic_rounding(packed_tinyweb, tmp_path):
    # stochastic rounding draws from per-layer generators that a plain state_dict does not hold
    straight = tiny_recipe(packed_tinyweb, tmp_path / "a", steps=6, checkpoint_every=3, eval_every=0,
                           precision="nvfp4")
    pretrain(straight, progress=False)
    split = tiny_recipe(packed_tinyweb, tmp_path / "b", steps=6, checkpoint_every=3, eval_every=0,
                        precision="nvfp4")
    pretrain(split, progress=False, max_steps_this_run=3)
    pretrain(split, progress=False)
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
    assert HybridLM.from_pretrained(tmp_path / "b" / "model") is not None  # exported as a plain model


@pytest.mark.parametrize("precision", ["nvfp4+switch", "bf16"])
def test_cpu_bf16_kept_blocks_and_the_late_switch_resume_bit_for_bit(packed_tinyweb, tmp_path, precision):
    # on a CPU, bf16 and nvfp4's kept block are bf16-emulating QuantLinears; the switch (at step 8 of 10) is in the
    # checkpoint taken at step 9, and the SR generators of the quantized blocks too
    def recipe(out):
        return tiny_recipe(packed_tinyweb, tmp_path / out, steps=10, checkpoint_every=0, eval_every=0,
                           precision=precision)

    pretrain(recipe("a"), progress=False)
    pretrain(recipe("b"), progress=False, max_steps_this_run=9)
    state = json.loads(sorted((tmp_path / "b" / "checkpoints").glob("*/trainer.json"))[-1].read_text())
    if precision.endswith("+switch"):
        assert state["step"] == 9 and all(v["hp_forward"] for v in state["precision"].values())
    pretrain(recipe("b"), progress=False)
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
