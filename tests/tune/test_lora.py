"""LoRA: trains only adapters, merges exactly, saves a PEFT adapter that peft loads onto transformers' model."""

import json

import pytest
import torch

from hytron.model import HybridLM
from hytron.tune import LoRAConfig, TuneConfig, apply_lora, finetune, load_adapter, merge_lora, save_adapter
from hytron.tune.lora import ALL_TARGETS, lora_modules
from tests.conftest import tiny_model
from tests.tune.conftest import tune_optim as _optim


def _tiny(seed=0, **overrides):
    torch.manual_seed(seed)
    return tiny_model(**overrides)


def _random_adapters(model, seed=1):
    """Non-zero B so the adapter changes the output (a fresh adapter is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.copy_(0.05 * torch.randn(m.lora_B.shape, generator=g))


def test_fresh_adapter_is_identity_and_only_adapters_train():
    model = _tiny()
    ids = torch.randint(0, 512, (2, 24))
    with torch.no_grad():
        want = model(ids)
    wrapped = apply_lora(model, LoRAConfig(r=4, targets=list(ALL_TARGETS)))
    # every Linear kind: Mamba in/out, attention q/k/v/o, MLP up/down, lm_head
    kinds = {n.rsplit(".", 1)[-1] for n in wrapped}
    assert kinds == set(ALL_TARGETS)
    with torch.no_grad():
        assert torch.equal(model(ids), want)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    # base weights keep their names (state_dict of a plain model is a subset)
    assert set(HybridLM(model.config).state_dict()) <= set(model.state_dict())


def test_lora_training_moves_loss_and_leaves_base_weights(packed_data, tmp_path):
    torch.manual_seed(0)
    model = _tiny()
    base = {n: p.clone() for n, p in model.named_parameters()}
    apply_lora(model, LoRAConfig(r=4, alpha=8))
    from hytron.tune import packed_batches, packed_eval_batches

    cfg = TuneConfig(out_dir=str(tmp_path), steps=15, optim=_optim(lr=5e-3, warmup_steps=2))
    result = finetune(model, packed_batches(packed_data, 32, 4), cfg,
                      eval_batches=packed_eval_batches(packed_data, 32, 4, 2), progress=False)
    assert result["after"]["val_loss"] < result["before"]["val_loss"] - 0.1
    assert result["trainable_params"] < 0.2 * result["total_params"]
    for n, p in model.named_parameters():
        if ".lora_" not in n:
            assert torch.equal(p, base[n]), n


def test_merged_model_equals_base_plus_adapter(tmp_path):
    model = _tiny()
    apply_lora(model, LoRAConfig(r=4, alpha=8, targets=list(ALL_TARGETS)))
    _random_adapters(model)
    ids = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        with_adapter = model(ids)
    merge_lora(model)
    assert not lora_modules(model)
    model.save_pretrained(tmp_path / "merged")
    plain = HybridLM.from_pretrained(tmp_path / "merged")  # a plain Nemotron-H directory
    with torch.no_grad():
        assert (plain(ids) - with_adapter).abs().max().item() < 1e-5
        assert (model(ids) - with_adapter).abs().max().item() < 1e-5


def test_adapter_roundtrip_and_mismatch_errors(tmp_path):
    model = _tiny()
    cfg = LoRAConfig(r=4, alpha=8, use_rslora=True)
    apply_lora(model, cfg)
    _random_adapters(model)
    save_adapter(model, tmp_path / "ad", cfg)
    data = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert data["peft_type"] == "LORA" and data["r"] == 4 and data["use_rslora"] is True
    again = _tiny()
    load_adapter(again, tmp_path / "ad")
    ids = torch.randint(0, 512, (1, 20))
    with torch.no_grad():
        assert torch.equal(again(ids), model(ids))
    other = _tiny(hidden_size=64)
    with pytest.raises(ValueError, match="lora_A"):
        load_adapter(other, tmp_path / "ad")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(_tiny(), tmp_path)
    with pytest.raises(Exception, match="unknown module"):
        LoRAConfig(targets=["qkv"])


def test_peft_loads_hytron_adapter_on_transformers_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model = _tiny()
    model.save_pretrained(tmp_path / "base")
    cfg = LoRAConfig(r=4, alpha=8)  # defaults: every Linear peft accepts on nemotron_h
    apply_lora(model, cfg)
    _random_adapters(model)
    save_adapter(model, tmp_path / "ad", cfg, base_model=str(tmp_path / "base"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32,
                                                           attn_implementation="eager")
    hf_lora = peft.PeftModel.from_pretrained(hf, tmp_path / "ad").eval()
    ids = torch.randint(0, 512, (2, 37))
    with torch.no_grad():
        ours = model(ids)
        theirs = hf_lora(input_ids=ids, use_cache=False).logits
        plain = hytron_base_logits(tmp_path / "base", ids)
    assert (ours - plain).abs().max().item() > 1e-3  # the adapter matters ...
    assert (ours - theirs).abs().max().item() < 1e-4  # ... and peft applies it exactly as hytron does


def test_hytron_loads_adapter_written_by_peft(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    base = _tiny()
    base.save_pretrained(tmp_path / "base")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32,
                                                           attn_implementation="eager")
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["in_proj", "q_proj", "up_proj", "down_proj"],
                          task_type="CAUSAL_LM")
    hf_lora = peft.get_peft_model(hf, cfg)
    with torch.no_grad():
        for n, p in hf_lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    hf_lora.save_pretrained(tmp_path / "ad")
    load_adapter(base, tmp_path / "ad")
    ids = torch.randint(0, 512, (2, 30))
    with torch.no_grad():
        diff = (base(ids) - hf_lora.eval()(input_ids=ids, use_cache=False).logits).abs().max().item()
    assert diff < 1e-4


def hytron_base_logits(path, ids):
    with torch.no_grad():
        return HybridLM.from_pretrained(path).eval()(ids)


def _moe_tiny():
    return _tiny(pattern="M*-E", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                 n_shared_experts=1, moe_shared_expert_intermediate_size=32)


def test_coverage_report_counts_every_layer_kind():
    from hytron.tune.lora import format_coverage, lora_coverage

    model = _moe_tiny()
    apply_lora(model, LoRAConfig(r=2))  # the defaults: q/k/v/o, in_proj, up/down
    rows = {r["kind"]: r for r in lora_coverage(model)}
    assert set(rows) == {"mamba", "attention", "mlp", "moe routed experts", "moe shared experts", "lm head"}
    assert (rows["attention"]["adapted"], rows["attention"]["linears"]) == (4, 4)
    assert (rows["mamba"]["adapted"], rows["mamba"]["linears"]) == (1, 2)  # in_proj yes, out_proj not by default
    assert (rows["mlp"]["adapted"], rows["moe shared experts"]["adapted"]) == (2, 2)
    # routed experts are 3-D tensors: no Linear, nothing trains there, and the report says so
    assert rows["moe routed experts"]["linears"] == rows["moe routed experts"]["trainable_params"] == 0
    assert rows["moe routed experts"]["params"] > 0
    assert rows["lm head"]["trainable_params"] == 0
    # the trainable counts add up to exactly the adapter parameters
    adapters = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert sum(r["trainable_params"] for r in rows.values()) == adapters
    attn = model.backbone.layers[1].mixer
    projections = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)
    assert rows["attention"]["trainable_params"] == sum(2 * (m.in_features + m.out_features) for m in projections)
    text = format_coverage(list(rows.values()))
    assert "moe routed experts" in text and "0 / 0" in text and "% train" in text


def test_targets_the_user_names_must_match_something():
    attention_free = _tiny(pattern="M-M-")
    # defaults skip what the model lacks (here q/k/v/o) ...
    assert {n.rsplit(".", 1)[-1] for n in apply_lora(attention_free, LoRAConfig(r=2))} == {"in_proj", "up_proj",
                                                                                          "down_proj"}
    # ... but a list the user wrote is checked, and the error names the missing names and the model's kinds
    with pytest.raises(ValueError, match=r"\['q_proj'\] match no nn.Linear.*mamba, mlp"):
        apply_lora(_tiny(pattern="M-M-"), LoRAConfig(r=2, targets=["q_proj", "in_proj"]))
