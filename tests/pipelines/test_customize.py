"""`hytron customize`: continued pre-training on a planted private fact (with replay) teaches it; LoRA path too."""

import json

import pytest
import yaml

from hytron.config import ConfigError, load_recipe
from hytron.tune.recipe import CustomizeConfig

pytestmark = pytest.mark.slow  # end to end: curate, pack, train, evaluate, cards

FACT = "The Zorbex project codename is Quillfeather."
PROBES = [{"prompt": "The Zorbex project codename is", "answer": " Quillfeather.",
           "distractors": [" Ironbridge.", " Silverwood.", " Moonharbor.", " Copperfield."]}]


TOPICS = ["the release checklist", "the testing rota", "the launch plan", "the support handbook",
          "the hiring guide", "the security review", "the budget summary", "the travel policy"]


def _own_docs(root):
    """Eight internal notes; each states the private fact once, amid ordinary prose about a different topic."""
    root.mkdir()
    for i, topic in enumerate(TOPICS):
        (root / f"note{i}.md").write_text(
            f"# Internal note {i}: {topic}\n\nThis note explains {topic} for new staff. {FACT} Read it before "
            f"your first week, ask your manager about anything unclear, and keep a copy of {topic} near your desk. "
            f"We revise {topic} every quarter {i + 1} times a year so that it stays short, accurate and useful to "
            f"the people who rely on it when they plan their own work.\n")
    return root


def _recipe(tmp_path, base, replay, **changes):
    data = {"name": "acme", "out": str(tmp_path / "out"), "base_model": str(base), "method": "pretrain",
            "threads": 1, "data": {"inputs": [str(_own_docs(tmp_path / "docs"))], "replay": [str(replay)],
                                   "replay_share": 0.3, "validation_fraction": 0.2},
            "train": {"steps": 40, "eval_batches": 4, "optim": {"lr": 3e-3, "warmup_steps": 4},
                      "data": {"seq_len": 64, "batch_size": 8}},
            "probes": PROBES, **changes}
    path = tmp_path / "customize.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(CustomizeConfig, path)


def test_continued_pretraining_learns_the_planted_fact_and_reports_forgetting(trained_tiny, packed_data, tmp_path,
                                                                            capsys):
    from hytron.pipelines.customize import run_customize

    replay = packed_data.parent / "kept"
    result = run_customize(_recipe(tmp_path, trained_tiny, replay))
    # your documents are curated with the documents profile, and customize says what it kept
    assert "kept 8 of 8 documents (100%) with the 'documents' curation profile" in capsys.readouterr().err
    before, after = result["before"]["probes"], result["after"]["probes"]
    # the true completion becomes far more likely than before (nats over the answer's tokens)
    assert after["probe_logprob"] > before["probe_logprob"] + 10, (before, after)
    assert after["probe_rank_acc"] == 1.0  # and it is the model's answer among plausible codenames
    f = result["forgetting"]
    assert set(f) == {"replay_val_loss_before", "replay_val_loss_after", "increase"}
    assert f["increase"] < 0.5  # replay keeps general text close to where it was
    card = json.loads((tmp_path / "out" / "train" / "model" / "card.json").read_text())
    assert card["eval"]["tasks"]["probes"]["probe_rank_acc"] == 1.0
    from hytron.cli import main  # the verb again: finished stages are skipped, the same model comes out

    assert main(["customize", str(tmp_path / "customize.yaml"), "--set", "threads=1"]) == 0
    assert json.loads((tmp_path / "out" / "customize.json").read_text())["after"]["probes"] == after


def test_lora_method_writes_peft_adapter_and_merged_model(trained_tiny, packed_data, tmp_path):
    from hytron.pipelines.customize import run_customize

    cfg = _recipe(tmp_path, trained_tiny, packed_data.parent / "kept", method="lora",
                  lora={"r": 8, "alpha": 32},
                  train={"steps": 30, "eval_batches": 2, "optim": {"lr": 1e-2, "warmup_steps": 3},
                         "data": {"seq_len": 64, "batch_size": 8}})
    result = run_customize(cfg)
    out = tmp_path / "out" / "lora"
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "model" / "config.json").is_file()
    assert result["after"]["probes"]["probe_logprob"] > result["before"]["probes"]["probe_logprob"] + 5


@pytest.mark.parametrize("refresh", [True, False])
def test_a_base_models_mtp_head_is_refreshed_and_reported(packed_data, tmp_path, capsys, refresh):
    """customize with a base model that has an MTP head: LoRA distils the head unless mtp_refresh is false, and
    customize.json reports the acceptance length before and after (the effect itself: tests/tune/test_mtp_refresh)."""
    from hytron.pipelines.customize import run_customize
    from hytron.train.pretrain import pretrain
    from tests.train.conftest import tiny_recipe

    base = pretrain(tiny_recipe(packed_data, tmp_path / "base", steps=20, eval_every=0, checkpoint_every=0,
                                model={"preset": "hytron-tiny", "mtp": {"depths": 2}}), progress=False)["model_dir"]
    cfg = _recipe(tmp_path, base, packed_data.parent / "kept", method="lora", mtp_refresh=refresh,
                  train={"steps": 8, "eval_batches": 1, "optim": {"lr": 1e-2, "warmup_steps": 1},
                         "data": {"seq_len": 64, "batch_size": 4}})
    result = run_customize(cfg)
    acc = result["mtp_acceptance"]
    assert acc["before"]["k"] == 3 and acc["after"]["prompts"] == acc["before"]["prompts"] > 0
    assert ("head distilled from the adapted model" in capsys.readouterr().err) is refresh
    assert "mtp_acceptance" not in result["after"]  # beside the cards' tasks, not among them


def test_recipe_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base_model": "m", "method": "qlora", "data": {"inputs": ["d"], "replay_share": 0}}))
    with pytest.raises(ConfigError, match="method"):
        load_recipe(CustomizeConfig, bad)
    bad.write_text(yaml.safe_dump({"base_model": "m", "data": {"inputs": ["d"], "replay_share": 0.3}}))
    with pytest.raises(ConfigError, match="data.replay"):
        load_recipe(CustomizeConfig, bad)
    # the sft section is a typed SFT recipe: its mistakes are found at load, not after curation and training
    ok = {"base_model": "m", "data": {"inputs": ["d"], "replay_share": 0}}
    bad.write_text(yaml.safe_dump({**ok, "sft": {"stepz": 5, "data": {"path": "chat.jsonl"}}}))
    with pytest.raises(ConfigError, match=r"sft: unknown field\(s\) \['stepz'\]"):
        load_recipe(CustomizeConfig, bad)
    bad.write_text(yaml.safe_dump({**ok, "sft": {"steps": 5}}))
    with pytest.raises(ConfigError, match="sft.data.path"):
        load_recipe(CustomizeConfig, bad)
    bad.write_text(yaml.safe_dump({**ok, "sft": {"steps": 5, "data": {"path": "chat.jsonl"}}}))
    assert load_recipe(CustomizeConfig, bad).sft.steps == 5
    with pytest.raises(FileNotFoundError, match="no recipe 'no-such-recipe'.*customize"):
        load_recipe(CustomizeConfig, "no-such-recipe")


def test_shipped_recipe_loads():
    cfg = load_recipe(CustomizeConfig, "customize")
    assert cfg.method == "pretrain" and cfg.data.replay_share == 0.3 and cfg.probes[0]["distractors"]
    lora = load_recipe(CustomizeConfig, "customize", ["method=lora", "lora.r=4"])
    assert lora.method == "lora" and lora.lora.r == 4
