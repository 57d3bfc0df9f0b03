"""`hytron export gguf`: the file's keys and tensors say what llama.cpp's nemotron_h loaders read; bad input is
refused with one clear line and leaves no file behind."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from hytron.cli import main
from hytron.export.gguf_model import export_gguf

gguf = pytest.importorskip("gguf")


def _fields(reader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items()}


def test_cli_writes_dense_q8_0_file_llama_cpp_can_read(dense_dir, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert main(["export", "gguf", str(dense_dir), "--out", str(out), "--outtype", "q8_0"]) == 0
    assert "llama-cli" in capsys.readouterr().out
    r = gguf.GGUFReader(out)
    kv = _fields(r)
    cfg = json.loads((dense_dir / "config.json").read_text())
    pattern = cfg["hybrid_override_pattern"]  # M-M-M*-M-M-
    assert kv["general.architecture"] == "nemotron_h"
    # llama.cpp infers a block's kind from these two per-layer arrays (both 0: Mamba-2)
    assert kv["nemotron_h.attention.head_count_kv"] == [cfg["num_key_value_heads"] if ch == "*" else 0
                                                        for ch in pattern]
    assert kv["nemotron_h.feed_forward_length"] == [cfg["intermediate_size"] if ch == "-" else 0 for ch in pattern]
    assert kv["nemotron_h.ssm.inner_size"] == cfg["mamba_num_heads"] * cfg["mamba_head_dim"]
    assert kv["nemotron_h.ssm.time_step_rank"] == cfg["mamba_num_heads"]
    assert not any(k.startswith("nemotron_h.expert") for k in kv)
    assert kv["tokenizer.ggml.pre"] == "gpt-2" and kv["tokenizer.ggml.model"] == "gpt2"
    tok_cfg = json.loads((dense_dir / "tokenizer_config.json").read_text())
    # the training-only `generation` tags are removed, the rest of the template is kept verbatim
    want = tok_cfg["chat_template"].replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    assert want != tok_cfg["chat_template"] and kv["tokenizer.chat_template"] == want
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.0.ssm_in.weight"] == "Q8_0" and types["token_embd.weight"] == "Q8_0"
    for name in ("blk.0.ssm_conv1d.weight", "blk.0.ssm_a", "blk.0.ssm_norm.weight", "output_norm.weight"):
        assert types[name] == "F32", name  # kept exact, as llama.cpp's converter keeps them
    assert not list(tmp_path.glob("*.partial"))


def test_mamba_parameters_are_stored_as_llama_cpp_computes_with_them(dense_dir, tmp_path):
    r = gguf.GGUFReader(export_gguf(dense_dir, tmp_path / "m.gguf", "f32"))
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    hf = load_file(dense_dir / "model.safetensors")  # the checkpoint as written on disk
    groups = json.loads((dense_dir / "config.json").read_text())["n_groups"]
    src = "backbone.layers.0.mixer."
    np.testing.assert_allclose(t["blk.0.ssm_a"].reshape(-1), -np.exp(hf[src + "A_log"]), rtol=1e-6)
    np.testing.assert_array_equal(t["blk.0.ssm_conv1d.weight"], hf[src + "conv1d.weight"][:, 0, :])
    np.testing.assert_array_equal(t["blk.0.ssm_norm.weight"], hf[src + "norm.weight"].reshape(groups, -1))
    np.testing.assert_array_equal(t["blk.0.ssm_dt.bias"], hf[src + "dt_bias"])
    np.testing.assert_array_equal(t["output.weight"], hf["lm_head.weight"])


def test_moe_file_stacks_experts(moe_dir, tmp_path):
    r = gguf.GGUFReader(export_gguf(moe_dir, tmp_path / "m.gguf", "bf16"))
    kv = _fields(r)
    cfg = json.loads((moe_dir / "config.json").read_text())
    assert kv["general.architecture"] == "nemotron_h_moe"
    assert kv["nemotron_h_moe.expert_count"] == cfg["n_routed_experts"]
    assert kv["nemotron_h_moe.expert_used_count"] == cfg["num_experts_per_tok"]
    assert kv["nemotron_h_moe.expert_weights_scale"] == pytest.approx(cfg["routed_scaling_factor"])
    e = cfg["hybrid_override_pattern"].index("E")
    t = {x.name: x for x in r.tensors}
    up = t[f"blk.{e}.ffn_up_exps.weight"]
    assert up.tensor_type.name == "BF16"
    # ggml order (in, out, experts) = PyTorch (experts, out, in) reversed
    assert list(up.shape) == [cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["n_routed_experts"]]
    hf = load_file(moe_dir / "model.safetensors")
    bias = hf[f"backbone.layers.{e}.mixer.gate.e_score_correction_bias"]
    np.testing.assert_array_equal(np.asarray(t[f"blk.{e}.exp_probs_b.bias"].data), bias)


def test_tokenizer_without_a_matching_llama_cpp_pretokenizer_is_refused(dense_dir, tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in dense_dir.iterdir():
        (model_dir / f.name).write_bytes(f.read_bytes())
    # a BPE trained by `tokenizers` with whitespace pre-tokenization: llama.cpp has no such type
    other = Tokenizer(models.BPE(unk_token="<unk>"))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    other.train_from_iterator(["some text to learn from"] * 10, trainers.BpeTrainer(vocab_size=300,
                                                                                   special_tokens=["<unk>"]))
    other.save(str(model_dir / "tokenizer.json"))
    out = tmp_path / "x.gguf"
    assert main(["export", "gguf", str(model_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tokenizer.json" in err and "pre_tokenizer" in err and "Whitespace" in err
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_missing_tokenizer_and_bad_outtype_are_clear_errors(dense_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model_dir / name).write_bytes((dense_dir / name).read_bytes())
    assert main(["export", "gguf", str(model_dir), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="outtype"):
        export_gguf(dense_dir, tmp_path / "x.gguf", "q4_k")
    with pytest.raises(SystemExit):
        main(["export", "gguf", str(dense_dir), "--out", str(tmp_path / "x.gguf"), "--outtype", "q4_k"])


def test_checkpoint_written_by_transformers_exports_to_the_same_file(moe_dir, tmp_path):
    import torch

    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(moe_dir, dtype=torch.float32)
    hf.save_pretrained(tmp_path / "hf")  # transformers' names, stacked or per-expert layout and config keys
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "hf" / name).write_bytes((moe_dir / name).read_bytes())
    ours = gguf.GGUFReader(export_gguf(moe_dir, tmp_path / "a.gguf"))
    theirs = gguf.GGUFReader(export_gguf(tmp_path / "hf", tmp_path / "b.gguf"))
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors):
        np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data), err_msg=a.name)


def _with_tokenizer_of(model, model_dir, path):
    """`model` saved at `path` with the tokenizer files of `model_dir` (same vocabulary size)."""
    model.save_pretrained(path)
    for f in model_dir.iterdir():
        if f.name != "config.json" and not f.name.endswith(".safetensors"):
            (path / f.name).write_bytes(f.read_bytes())
    return path


def test_latent_moe_is_written_as_llama_cpp_reads_it(moe_dir, tmp_path):
    from tests.conftest import tiny_model

    model = tiny_model("hytron-tiny-moe", moe_latent_size=16)
    r = gguf.GGUFReader(export_gguf(_with_tokenizer_of(model, moe_dir, tmp_path / "m"), tmp_path / "x.gguf"))
    kv, t = _fields(r), {x.name: np.asarray(x.data) for x in r.tensors}
    assert kv["nemotron_h_moe.moe_latent_size"] == 16
    i = model.config.pattern.index("E")
    mixer = model.backbone.layers[i].mixer
    np.testing.assert_array_equal(t[f"blk.{i}.ffn_latent_down.weight"], mixer.fc1_latent_proj.weight.detach().numpy())
    np.testing.assert_array_equal(t[f"blk.{i}.ffn_latent_up.weight"], mixer.fc2_latent_proj.weight.detach().numpy())
    assert t[f"blk.{i}.ffn_up_exps.weight"].shape[-1] == 16  # the experts' input is the latent width


@pytest.mark.parametrize(("preset", "mtp_pattern", "why"), [
    ("hytron-tiny", "*-", "no MTP graph for dense nemotron_h models"),
    ("hytron-tiny-moe", "*E", "with LayerNorm where it has RMSNorm"),
])
def test_mtp_head_is_left_out_with_one_line_saying_why(preset, mtp_pattern, why, moe_dir, tmp_path, capsys):
    from tests.conftest import tiny_model

    model = tiny_model(preset, num_nextn_predict_layers=1, mtp_pattern=mtp_pattern)
    model_dir = _with_tokenizer_of(model, moe_dir, tmp_path / "m")
    assert main(["export", "gguf", str(model_dir), "--out", str(tmp_path / "x.gguf")]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "MTP head" in line]
    assert len(said) == 1 and why in said[0] and f"({mtp_pattern!r})" in said[0]
    r = gguf.GGUFReader(tmp_path / "x.gguf")
    arch = _fields(r)["general.architecture"]
    assert _fields(r)[f"{arch}.block_count"] == model.config.num_layers
    assert not any("nextn" in x.name for x in r.tensors) and f"{arch}.nextn_predict_layers" not in _fields(r)
