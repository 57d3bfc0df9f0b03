"""`hytron lora` and `hytron customize` with a base model written by transformers (its own tokenizer and template)."""

import json

import pytest
import torch
import yaml

from hytron.cli import main
from hytron.model import HybridLM
from hytron.tokenizer import Tokenizer
from tests.fixtures.foreign import CORPUS

pytest.importorskip("transformers")

ROWS = [{"messages": [{"role": "user", "content": "What is 6 times 7? /no_think"},
                      {"role": "assistant", "content": "42"}]},
        {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": "Where does the river Alder rise?"},
                      {"role": "assistant", "content": "On Mount Kell."}]}] * 4


def test_lora_on_a_nano2_checkpoint_keeps_its_tokenizer(foreign, tmp_path):
    base = foreign("nano2")
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    rc = main(["lora", "lora", "--set", f"model.init_from={base}", "--set", f"data.path={tmp_path / 'rows.jsonl'}",
               "--set", f"out_dir={tmp_path / 'l'}", "--set", "steps=3", "--set", "data.seq_len=256", "--set",
               "data.batch_size=2", "--set", "eval_batches=1", "--set", "threads=1", "--no-progress"])
    assert rc == 0
    summary = json.loads((tmp_path / "l" / "summary.json").read_text())
    assert all(torch.isfinite(torch.tensor(v)) for v in summary.values() if isinstance(v, float))
    merged = tmp_path / "l" / "model"
    tok, orig = Tokenizer.load(merged), Tokenizer.load(base)
    assert tok.stop_ids == orig.stop_ids and tok.chat_template == orig.chat_template
    assert HybridLM.from_pretrained(merged).config.vocab_size == HybridLM.from_pretrained(base).config.vocab_size


def test_customize_packs_with_the_base_models_tokenizer(foreign, tmp_path):
    from hytron.config import load_recipe
    from hytron.pipelines.customize import run_customize
    from hytron.tune.recipe import CustomizeConfig

    base = foreign("nemotron3")
    (tmp_path / "docs").mkdir()
    for i in range(6):
        (tmp_path / "docs" / f"note{i}.md").write_text(
            f"# Note {i}\n\nThe Zorbex project codename is Quillfeather. " + " ".join(CORPUS) + "\n")
    (tmp_path / "replay.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "text": t * 3}) + "\n"
                                                   for i, t in enumerate(CORPUS)))
    recipe = {"name": "acme", "out": str(tmp_path / "out"), "base_model": str(base), "method": "pretrain",
              "threads": 1, "data": {"inputs": [str(tmp_path / "docs")], "replay": [str(tmp_path / "replay.jsonl")],
                                     "replay_share": 0.3, "validation_fraction": 0.2},
              "train": {"steps": 3, "eval_batches": 1, "optim": {"lr": 1e-3, "warmup_steps": 1},
                        "data": {"seq_len": 64, "batch_size": 4}},
              "probes": [{"prompt": "The Zorbex project codename is", "answer": " Quillfeather.",
                          "distractors": [" Ironbridge."]}]}
    (tmp_path / "customize.yaml").write_text(yaml.safe_dump(recipe))
    result = run_customize(load_recipe(CustomizeConfig, tmp_path / "customize.yaml"))
    index = json.loads((tmp_path / "out" / "packed" / "index.json").read_text())
    tok = Tokenizer.load(base)
    assert index["bos_id"] == tok.bos_id and index["eos_id"] == tok.eos_id
    assert "probes" in result["after"]
    out_model = tmp_path / "out" / "train" / "model"
    assert Tokenizer.load(out_model).stop_ids == (2, 11)  # the checkpoint's generation_config travels along


def test_lora_on_a_latent_moe_checkpoint_adapts_its_shared_experts(foreign, tmp_path):
    """A Nemotron 3 Super-shaped checkpoint written by transformers (LatentMoE, bf16): LoRA reaches attention,
    Mamba and the shared experts (routed experts are 3-D tensors LoRA does not reach), the merged model keeps the
    latent projections and the router in fp32, and its greedy text follows transformers' on the merged weights."""
    base = foreign("super")
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    rc = main(["lora", "lora", "--set", f"model.init_from={base}", "--set", f"data.path={tmp_path / 'rows.jsonl'}",
               "--set", f"out_dir={tmp_path / 'l'}", "--set", "steps=3", "--set", "data.seq_len=256", "--set",
               "data.batch_size=2", "--set", "eval_batches=1", "--set", "threads=1", "--set",
               "lora.targets=[q_proj, k_proj, v_proj, o_proj, in_proj, up_proj, down_proj]", "--no-progress"])
    assert rc == 0
    summary = json.loads((tmp_path / "l" / "summary.json").read_text())
    kinds = {row["kind"]: row for row in summary["coverage"]}
    assert kinds["moe shared experts"]["adapted"] > 0 and kinds["attention"]["adapted"] == 4, kinds
    assert kinds["moe routed experts"]["adapted"] == 0  # 3-D tensors: counted, not adapted
    merged = HybridLM.from_pretrained(tmp_path / "l" / "model")
    assert merged.config.moe_latent_size == 24
    router = [p for n, p in merged.named_parameters() if n.endswith("gate.weight")]
    assert router and all(p.dtype == torch.float32 for p in router)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "l" / "model"), dtype=torch.float32).eval()
    ids = torch.tensor([Tokenizer.load(base).encode("The river Alder rises on")])
    with torch.no_grad():
        assert torch.allclose(merged.float()(ids), hf(ids).logits, atol=1e-4)
