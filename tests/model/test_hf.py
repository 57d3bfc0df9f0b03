"""Nemotron-H format: parity with transformers' NemotronHForCausalLM both ways, sharding, refusals."""

import json

import pytest
import torch

from hytron.model import HybridConfig, HybridLM
from tests.conftest import randomize

transformers = pytest.importorskip("transformers")

# random configs that cover every block kind; sequences (37) span several chunks (8)
CONFIGS = {
    "mamba-attn-mlp": dict(pattern="M-M*-M-", chunk_size=8),
    "moe": dict(pattern="MEM*E", chunk_size=8, n_routed_experts=8, num_experts_per_tok=3,
                moe_intermediate_size=48, moe_shared_expert_intermediate_size=96, routed_scaling_factor=2.5),
    "grouped-moe-gqa1": dict(pattern="*EM-", chunk_size=8, num_key_value_heads=1, n_routed_experts=8,
                             num_experts_per_tok=2, moe_intermediate_size=32,
                             moe_shared_expert_intermediate_size=64, n_group=2, topk_group=1),
    # Nemotron 3 Super's design in small: LatentMoE (experts in a 24-wide latent of the 128-wide stream), grouped
    # routing, scaling 5.0, and an MTP module "*E" (transformers drops mtp.*: the main logits are compared)
    "latent-moe-mtp": dict(pattern="MEM*E", chunk_size=8, n_routed_experts=8, num_experts_per_tok=3,
                           moe_intermediate_size=48, moe_shared_expert_intermediate_size=96, moe_latent_size=24,
                           n_group=2, topk_group=1, routed_scaling_factor=5.0, num_nextn_predict_layers=1,
                           mtp_pattern="*E"),
}


def _model(name, seed=0):
    torch.manual_seed(seed)
    cfg = HybridConfig.from_name("hytron-tiny", **CONFIGS[name])
    return _loud_experts(randomize(HybridLM(cfg).eval(), seed))


def _loud_experts(model):
    """Routed experts and latent projections at fan-in scale: at init (down_proj std 0.02/sqrt(2 layers)) the
    routed path adds ~1e-4 to the output, so a wrong expert, latent projection or routing weight would hide
    under the 1e-4 parity tolerance."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".experts." in name or "latent_proj" in name:
                p.normal_(0.0, p.size(-1) ** -0.5)
    return model


def _hf_load(path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hytron_saves_transformers_loads_same_logits(name, tmp_path):
    m = _model(name)
    m.save_pretrained(tmp_path)
    hf = _hf_load(tmp_path)
    ids = torch.randint(0, m.config.vocab_size, (2, 37))
    with torch.no_grad():
        diff = (m(ids) - hf(ids, use_cache=False).logits).abs().max().item()
    assert diff <= 1e-4


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_transformers_saves_hytron_loads_same_logits(name, tmp_path):
    m = _model(name, seed=1)
    m.save_pretrained(tmp_path / "a")
    hf = _hf_load(tmp_path / "a")
    hf.save_pretrained(tmp_path / "b")  # transformers' own writer (its names, its config keys)
    if m.config.num_nextn_predict_layers:  # transformers saved the MTP config fields but not the mtp.* tensors
        with pytest.warns(UserWarning, match="no mtp.* tensors"):
            back = HybridLM.from_pretrained(tmp_path / "b")
        assert back.mtp is None
    else:
        back = HybridLM.from_pretrained(tmp_path / "b")
    ids = torch.randint(0, m.config.vocab_size, (2, 37))
    with torch.no_grad():
        diff = (back(ids) - hf(ids, use_cache=False).logits).abs().max().item()
    assert diff <= 1e-4
    assert back.config.pattern == m.config.pattern


def test_greedy_decode_matches_transformers_generate(tmp_path):
    m = _model("mamba-attn-mlp")
    m.save_pretrained(tmp_path)
    hf = _hf_load(tmp_path)
    ids = torch.randint(3, 512, (1, 12))
    with torch.no_grad():
        want = hf.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
        cache = m.new_cache(1)
        logits = m(ids, cache, last_only=True)
        out = ids
        for _ in range(20):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], 1)
            logits = m(nxt, cache)
    assert torch.equal(out, want)


def test_sharded_save_roundtrips_exactly(tmp_path):
    m = _model("moe")
    m.save_pretrained(tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    back = HybridLM.from_pretrained(tmp_path)
    for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert _hf_load(tmp_path) is not None  # transformers reads the sharded layout too


def test_config_json_writes_every_width_explicitly(tmp_path):
    m = _model("mamba-attn-mlp")
    m.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "nemotron_h" and "auto_map" not in cfg
    for key in ("mamba_num_heads", "mamba_head_dim", "head_dim", "hidden_size", "intermediate_size",
                "ssm_state_size", "n_groups", "num_key_value_heads"):
        assert key in cfg, key
    assert cfg["hybrid_override_pattern"] == "M-M*-M-"


def test_pickle_weight_files_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nemotron_h",
                                                      "hybrid_override_pattern": "M-"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ValueError, match="safetensors only"):
        HybridLM.from_pretrained(tmp_path)


def test_truncated_weights_give_a_clear_error(tmp_path):
    _model("mamba-attn-mlp").save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors: not a valid safetensors file"):
        HybridLM.from_pretrained(tmp_path)


def test_mis_shaped_and_missing_tensors_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    _model("mamba-attn-mlp").save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    tensors = load_file(str(f))
    tensors["backbone.layers.0.mixer.out_proj.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(f))
    with pytest.raises(ValueError, match=r"backbone\.layers\.0\.mixer\.out_proj\.weight has shape \(3, 3\)"):
        HybridLM.from_pretrained(tmp_path)
    del tensors["backbone.layers.0.mixer.out_proj.weight"]
    save_file(tensors, str(f))
    with pytest.raises(ValueError, match=r"lacks tensors \['backbone\.layers\.0\.mixer\.out_proj\.weight'\]"):
        HybridLM.from_pretrained(tmp_path)


def test_bad_config_json_is_refused_before_allocating(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nemotron_h",
                                                      "hybrid_override_pattern": "MQ", "hidden_size": 8}))
    with pytest.raises(ValueError, match="pattern"):
        HybridLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="expected 'nemotron_h'"):
        HybridLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nemotron_h", "hybrid_override_pattern": "M-",
                                                      "mlp_hidden_act": "silu"}))
    with pytest.raises(ValueError, match="mlp_hidden_act"):
        HybridLM.from_pretrained(tmp_path)


def test_router_stays_fp32_when_a_checkpoint_is_saved_or_loaded_in_bf16(tmp_path):
    """The sigmoid router computes in fp32 (transformers keeps it so: `_keep_in_fp32_modules_strict`): a bf16
    save writes it fp32, a bf16 load keeps it fp32 and bit-exact, in the main model and the MTP head, and a
    router an older writer stored in bf16 is computed in fp32 after loading."""
    from safetensors.torch import load_file, save_file

    m = _model("latent-moe-mtp")
    m.save_pretrained(tmp_path / "a", dtype=torch.bfloat16)
    disk = load_file(tmp_path / "a" / "model.safetensors")
    routers = [k for k in disk if k.endswith(("mixer.gate.weight", "gate.e_score_correction_bias"))]
    assert any(k.startswith("mtp.") for k in routers) and any(k.startswith("backbone.") for k in routers)
    assert {disk[k].dtype for k in routers} == {torch.float32}
    assert disk["backbone.layers.1.mixer.fc1_latent_proj.weight"].dtype == torch.bfloat16
    got = HybridLM.from_pretrained(tmp_path / "a", dtype=torch.bfloat16)
    want = dict(m.named_parameters())
    for name, p in got.named_parameters():
        if name.endswith("gate.weight"):
            assert p.dtype == torch.float32 and torch.equal(p, want[name]), name
        else:
            assert p.dtype == torch.bfloat16, name
    assert got.backbone.layers[1].mixer.gate.e_score_correction_bias.dtype == torch.float32
    # a router stored in bf16 by an older writer: fp32 in memory whatever dtype the load asks for
    save_file({k: v.to(torch.bfloat16) for k, v in disk.items()}, str(tmp_path / "a" / "model.safetensors"),
              metadata={"format": "pt"})
    for dtype in (None, torch.bfloat16):  # None: as stored (a GPU's default; "meta" stands in for it here)
        old = HybridLM.from_pretrained(tmp_path / "a", dtype=dtype, device="cpu" if dtype else "meta")
        assert old.backbone.layers[1].mixer.gate.weight.dtype == torch.float32
    # a head added to a bf16 model gets an fp32 router too
    plain = HybridLM(HybridConfig.from_name("hytron-tiny-moe")).to(torch.bfloat16)
    plain.add_mtp("*E")
    assert plain.mtp.layers[1].mixer.gate.weight.dtype == torch.float32
