"""Nemotron 3 Super's additions: LatentMoE parameter counts against transformers, and the MTP head in the
published layout (`mtp.layers.*`, shared embedding and LM head) loaded, run and saved back unchanged."""

import json

import pytest
import torch

from hytron.config import ConfigError
from hytron.model import PRESETS, HybridConfig, HybridLM
from hytron.model.hf import config_from_hf

transformers = pytest.importorskip("transformers")

SUPER_PATTERN = "MEMEMEM*EMEMEMEM*EMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEMEM*EMEMEMEM*EMEMEMEME"
# the published config's field set (research/nemotron3-super.md §1.1: Megatron-Bridge Nemotron3SuperProvider)
SUPER_HF = dict(model_type="nemotron_h", hybrid_override_pattern=SUPER_PATTERN, vocab_size=131072, hidden_size=4096,
                num_attention_heads=32, num_key_value_heads=2, head_dim=128, mamba_num_heads=128, mamba_head_dim=64,
                ssm_state_size=128, n_groups=8, conv_kernel=4, n_routed_experts=512, num_experts_per_tok=22,
                moe_intermediate_size=2688, moe_shared_expert_intermediate_size=5376, moe_latent_size=1024,
                routed_scaling_factor=5.0, n_group=1, topk_group=1, norm_topk_prob=True,
                moe_shared_expert_overlap=False, num_nextn_predict_layers=1, mtp_hybrid_override_pattern="*E",
                max_position_embeddings=262144)


def test_super_preset_counts_equal_transformers_and_the_published_figures():
    """Total and active parameters of `nemotron-3-super-120b-a12b` equal transformers' count for the published
    field set (built on the meta device: nothing allocated) and are within 1% of the published 120B / 12.7B.
    Both counts include the embedding and the untied LM head and leave out the MTP module: transformers' model
    does not build it, and counting its 2.9B would put the total 3% over the published 120B."""
    cfg = HybridConfig.from_name("nemotron-3-super-120b-a12b")
    skip = ("name", "extra", "intermediate_size")  # the dense-MLP width: unused, no '-' block in Super
    fields = {f: getattr(cfg, f) for f in HybridConfig.__dataclass_fields__ if f not in skip}
    assert fields == {f: getattr(config_from_hf(SUPER_HF), f) for f in fields}
    with torch.device("meta"):
        hf = transformers.NemotronHForCausalLM(transformers.NemotronHConfig(**SUPER_HF))
        ours = HybridLM(cfg)
    total = sum(p.numel() for p in hf.parameters())
    per_expert = sum(p[0].numel() for p in hf.model.layers[1].mixer.experts.parameters())  # up + down of one
    active = total - SUPER_PATTERN.count("E") * (512 - 22) * per_expert
    assert cfg.num_params() == ours.num_params() == total == 120_668_687_360
    assert cfg.num_params(active=True) == active == 12_770_216_960
    assert abs(total - PRESETS[cfg.name]["published"]) / 120e9 < 0.01
    assert abs(active - PRESETS[cfg.name]["published_active"]) / 12.7e9 < 0.01
    mtp = cfg.mtp_params()  # one attention + one 512-expert LatentMoE block + eh_proj (research: ≈ 2.9B)
    assert ours.num_params(mtp=True) - total == mtp == cfg.num_params(mtp=True) - total
    assert 2.8e9 < mtp < 3.0e9


# ---- a published-layout directory: transformers writes the main model, the MTP tensors are added by hand -----
D, LATENT, E, F_MOE, F_SHARED = 64, 16, 8, 32, 48
TINY_HF = dict(model_type="nemotron_h", architectures=["NemotronHForCausalLM"], hybrid_override_pattern="MEM*E",
               vocab_size=256, hidden_size=D, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               mamba_num_heads=8, mamba_head_dim=16, ssm_state_size=16, n_groups=2, conv_kernel=4, chunk_size=8,
               intermediate_size=F_MOE, n_routed_experts=E, num_experts_per_tok=3, moe_intermediate_size=F_MOE,
               moe_shared_expert_intermediate_size=F_SHARED, moe_latent_size=LATENT, routed_scaling_factor=5.0,
               n_group=2, topk_group=1, norm_topk_prob=True, moe_shared_expert_overlap=False,
               num_nextn_predict_layers=1, mtp_hybrid_override_pattern="*E", time_step_min=1e-9,
               tie_word_embeddings=False, torch_dtype="bfloat16")


def _mtp_tensors(g: torch.Generator) -> dict[str, torch.Tensor]:
    """The MTP block as the release stores it (research §1.4): layer 0 '*' with enorm/hnorm/eh_proj, layer 1
    'E' (LatentMoE, one tensor per expert) with final_layernorm. Fan-in scaled so every path matters."""
    def w(*shape):
        return torch.randn(*shape, generator=g) * shape[-1] ** -0.5

    def norm():
        return 1 + 0.3 * torch.randn(D, generator=g)

    a, m = "mtp.layers.0.", "mtp.layers.1."
    t = {a + "enorm.weight": norm(), a + "hnorm.weight": norm(), a + "eh_proj.weight": w(D, 2 * D),
         a + "norm.weight": norm(), a + "mixer.q_proj.weight": w(64, D), a + "mixer.k_proj.weight": w(32, D),
         a + "mixer.v_proj.weight": w(32, D), a + "mixer.o_proj.weight": w(D, 64),
         m + "norm.weight": norm(), m + "mixer.gate.weight": w(E, D),
         m + "mixer.gate.e_score_correction_bias": 0.1 * torch.randn(E, generator=g),
         m + "mixer.fc1_latent_proj.weight": w(LATENT, D), m + "mixer.fc2_latent_proj.weight": w(D, LATENT),
         m + "mixer.shared_experts.up_proj.weight": w(F_SHARED, D),
         m + "mixer.shared_experts.down_proj.weight": w(D, F_SHARED), m + "final_layernorm.weight": norm()}
    for j in range(E):
        t[f"{m}mixer.experts.{j}.up_proj.weight"] = w(F_MOE, LATENT)
        t[f"{m}mixer.experts.{j}.down_proj.weight"] = w(LATENT, F_MOE)
    return {k: v.to(torch.bfloat16) for k, v in t.items()}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A bf16 directory in the release's layout: two shards and an index, `backbone.*` written by transformers'
    own save_pretrained, `mtp.*` in their own shard, config.json with the published MTP/LatentMoE fields."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("published")
    torch.manual_seed(0)
    hf = transformers.NemotronHForCausalLM(transformers.NemotronHConfig(**TINY_HF))
    with torch.no_grad():  # loud routed experts and a non-zero selection bias (init leaves it at zero)
        for name, p in hf.named_parameters():
            if ".experts." in name or "latent_proj" in name:
                p.normal_(0.0, p.size(-1) ** -0.5)
        for name, b in hf.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.normal_(0.0, 0.1)
    hf.save_pretrained(root / "hf", safe_serialization=True)
    main = {k: v.to(torch.bfloat16) for k, v in load_file(str(root / "hf" / "model.safetensors")).items()}
    assert not any(k.startswith("mtp.") for k in main)
    mtp = _mtp_tensors(torch.Generator().manual_seed(1))
    folder = root / "model"
    folder.mkdir()
    save_file(main, str(folder / "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    save_file(mtp, str(folder / "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    weight_map = {**{k: "model-00001-of-00002.safetensors" for k in main},
                  **{k: "model-00002-of-00002.safetensors" for k in mtp}}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(TINY_HF))
    return folder, {**main, **mtp}


def test_published_mtp_directory_round_trips_every_tensor_and_config_field(published, tmp_path):
    from safetensors.torch import load_file

    folder, tensors = published
    model = HybridLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert model.config.num_nextn_predict_layers == 1 and model.config.mtp_pattern == "*E"
    assert len(model.mtp.layers) == 2 and model.mtp.layers[1].mixer.experts.up_proj.shape == (E, F_MOE, LATENT)
    model.save_pretrained(tmp_path)
    back = {}
    for f in tmp_path.glob("*.safetensors"):
        back.update(load_file(str(f)))
    assert sorted(back) == sorted(tensors)
    assert sum(k.startswith("mtp.") for k in back) == 16 + 2 * E
    for name, t in tensors.items():  # the router computes in fp32 (model.moe.ROUTER_FP32) and is written so
        router = name.endswith(("mixer.gate.weight", "gate.e_score_correction_bias"))
        assert back[name].dtype == (torch.float32 if router else torch.bfloat16), name
        assert torch.equal(back[name].to(t.dtype), t), name
    saved = json.loads((tmp_path / "config.json").read_text())
    for key, value in TINY_HF.items():
        if key == "time_step_min":  # hytron writes a negligible value for transformers (hf.config_to_hf)
            assert saved["hytron"]["time_step_min"] == value
        else:
            assert saved[key] == value, key
    again = HybridLM.from_pretrained(tmp_path, dtype=torch.bfloat16)  # and it reads itself back
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def _reference_mtp_logits(folder, ids: torch.Tensor, depths: int) -> list[torch.Tensor]:
    """MTP logits by the published equations (research §1.4) on transformers' own blocks: hidden = the main
    model's norm_f output; per depth k: eh_proj(cat[enorm(embed(x[t+k])), hnorm(h)]) -> '*' -> 'E' ->
    final_layernorm -> lm_head; the one MTP module is reused at every depth."""
    from safetensors.torch import load_file
    from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHBlock

    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    raw = {k: v.float() for k, v in load_file(str(folder / "model-00002-of-00002.safetensors")).items()}
    cfg = transformers.NemotronHConfig(**{**TINY_HF, "hybrid_override_pattern": "*E"})
    cfg._attn_implementation = "eager"
    blocks = [NemotronHBlock(cfg, i).eval() for i in range(2)]
    for i, block in enumerate(blocks):
        pre = f"mtp.layers.{i}."
        state = {k[len(pre):]: v for k, v in raw.items() if k.startswith(pre) and ".experts." not in k
                 and not k.endswith(("enorm.weight", "hnorm.weight", "eh_proj.weight", "final_layernorm.weight"))}
        if i == 1:
            for proj in ("up_proj", "down_proj"):
                state[f"mixer.experts.{proj}"] = torch.stack([raw[f"{pre}mixer.experts.{j}.{proj}.weight"]
                                                              for j in range(E)])
        block.load_state_dict(state)

    def rms(x, w):
        return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

    with torch.no_grad():
        h = hf.model(ids).last_hidden_state  # (b, L, d), after norm_f
        out = []
        for k in range(1, depths + 1):
            e = hf.model.embeddings(ids[:, k:])
            h = h[:, :-1]
            x = torch.cat([rms(e, raw["mtp.layers.0.enorm.weight"]), rms(h, raw["mtp.layers.0.hnorm.weight"])], -1)
            x = x @ raw["mtp.layers.0.eh_proj.weight"].T
            L = x.size(1)
            mask = torch.full((L, L), float("-inf")).triu(1)[None, None]
            x = blocks[0](x, attention_mask=mask)
            x = blocks[1](x)
            h = rms(x, raw["mtp.layers.1.final_layernorm.weight"])
            out.append(hf.lm_head(h))
    return out


def test_mtp_logits_match_the_published_equations_on_transformers_blocks(published):
    folder, _ = published
    model = HybridLM.from_pretrained(folder).eval()  # fp32 on CPU
    ids = torch.randint(0, 256, (2, 29))
    want = _reference_mtp_logits(folder, ids, depths=3)
    with torch.no_grad():
        logits, got = model(ids, mtp_depths=3)
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        assert (logits - hf(ids, use_cache=False).logits).abs().max() <= 1e-4
    assert [g.shape for g in got] == [(2, 28, 256), (2, 27, 256), (2, 26, 256)]
    for k, (g, w) in enumerate(zip(got, want), 1):
        assert (g - w).abs().max() <= 1e-4, (k, (g - w).abs().max())
    # depth 2 really chains on depth 1 and reuses the one module: it is not depth 1 again, shifted
    assert (got[1] - got[0][:, 1:]).abs().max() > 1e-2


def test_stored_modules_serve_their_depths_and_later_depths_reuse_the_last():
    cfg = HybridConfig.from_name("hytron-tiny", num_nextn_predict_layers=2, mtp_pattern="*-")
    model = HybridLM(cfg).eval()
    names = [k for k in model.state_dict() if k.startswith("mtp.")]
    assert {k.split(".")[2] for k in names} == {"0", "1", "2", "3"}  # mtp.layers.{module * 2 + inner}
    assert "mtp.layers.2.eh_proj.weight" in names and "mtp.layers.3.final_layernorm.weight" in names
    ids = torch.randint(0, 512, (1, 12))
    with torch.no_grad():
        hidden = model(ids, return_hidden=True)
        got = model.mtp_logits(ids, hidden, depths=3)
        h = hidden
        for k, module in ((1, 0), (2, 1), (3, 1)):
            blocks = model.mtp.layers[2 * module:2 * module + 2]
            x = blocks[0].eh_proj(torch.cat([blocks[0].enorm(model.backbone.embeddings(ids[:, k:])),
                                             blocks[0].hnorm(h[:, :-1])], -1))
            h = blocks[1].final_layernorm(blocks[1](blocks[0](x)))
            torch.testing.assert_close(got[k - 1], model.lm_head(h))


@pytest.mark.parametrize("bad,field", [
    (dict(mtp_pattern="*E"), "mtp_pattern"),  # a pattern without num_nextn_predict_layers
    (dict(num_nextn_predict_layers=1), "mtp_pattern"),  # a module without blocks
    (dict(num_nextn_predict_layers=1, mtp_pattern="*X"), "mtp_pattern"),
    (dict(num_nextn_predict_layers=1, mtp_pattern="*E"), "n_routed_experts"),  # MTP's E needs experts
    (dict(pattern="ME", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=8,
          moe_shared_expert_intermediate_size=8, moe_latent_size=0), "moe_latent_size"),
    (dict(moe_latent_size="big"), "moe_latent_size"),
    (dict(num_nextn_predict_layers=65, mtp_pattern="*"), "num_nextn_predict_layers"),
])
def test_bad_latent_and_mtp_configs_are_refused_naming_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        HybridConfig.from_dict({**PRESETS["hytron-tiny"]["config"], **bad})


def test_mtp_misuse_gets_clear_errors():
    with pytest.raises(ValueError, match="no MTP head"):
        HybridLM(HybridConfig.from_name("hytron-tiny"))(torch.zeros(1, 4, dtype=torch.long), mtp_depths=1)
    model = HybridLM(HybridConfig.from_name("hytron-tiny", num_nextn_predict_layers=1, mtp_pattern="*"))
    with pytest.raises(ValueError, match=r"depths must be in 1\.\.3 for 4 tokens"):
        model(torch.zeros(1, 4, dtype=torch.long), mtp_depths=4)
    with pytest.raises(ConfigError, match="mtp_layers_block_type has unknown layer types"):
        config_from_hf({**TINY_HF, "mtp_hybrid_override_pattern": None, "mtp_layers_block_type": ["attn"]})
