"""Dense models' config.json carries no MoE fields (converters such as llama.cpp's read them as "this is MoE"),
and transformers still loads it to the same logits; MoE configs keep theirs."""

import json

import pytest
import torch

from hytron.model import HybridConfig, HybridLM
from tests.conftest import tiny_model

transformers = pytest.importorskip("transformers")
MOE_KEYS = ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
            "moe_shared_expert_intermediate_size", "n_shared_experts", "routed_scaling_factor", "norm_topk_prob",
            "n_group", "topk_group")


def test_dense_config_has_no_moe_fields_and_transformers_loads_it(tmp_path):
    m = tiny_model("hytron-tiny")
    m.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert [k for k in MOE_KEYS if k in cfg] == []
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    ids = torch.randint(0, m.config.vocab_size, (1, 21))
    with torch.no_grad():
        assert (m(ids) - hf(ids, use_cache=False).logits).abs().max().item() <= 1e-4
    assert HybridLM.from_pretrained(tmp_path).config == m.config


def test_moe_config_keeps_its_moe_fields(tmp_path):
    m = HybridLM(HybridConfig.from_name("hytron-tiny-moe"))
    m.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["n_routed_experts"] == 8 and cfg["num_experts_per_tok"] == 2
    assert all(k in cfg for k in MOE_KEYS)
    assert HybridLM.from_pretrained(tmp_path).config == m.config
