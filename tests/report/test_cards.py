"""Model and data cards list the run's actual config, weights, data shards and curation input hashes."""

import hashlib
import json

import pytest

from hytron.report.cards import sha256_json, write_cards
from tests.eval.tinyrun import build_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("cards"), steps=4)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cards_list_actual_config_and_data_hashes(run):
    facts = write_cards(run["model"], run["run"])
    model_card = (run["model"] / "README.md").read_text()
    data_card = (run["model"] / "DATA_CARD.md").read_text()
    assert json.loads((run["model"] / "card.json").read_text()) == json.loads(json.dumps(facts, sort_keys=True))

    # the resolved config of the run, and its hash
    config = json.loads((run["run"] / "config.json").read_text())
    assert facts["run"]["config"] == config
    assert facts["run"]["config_sha256"] == sha256_json(config) and sha256_json(config) in model_card
    assert '"preset": "hytron-tiny"' in model_card
    # architecture and size from the weights' config.json
    assert facts["model"]["pattern"] == "M-M*-M-" and "`M-M*-M-`" in model_card
    from hytron.model import HybridLM

    n_params = sum(p.numel() for p in HybridLM.from_pretrained(run["model"]).parameters())
    assert facts["model"]["parameters"] == n_params and f"{n_params:,}" in model_card
    assert facts["model"]["files"]["model.safetensors"] == _sha(run["model"] / "model.safetensors")

    # every packed shard, the tokenizer and the curation inputs, hashed from the files themselves
    shards = sorted(p for p in run["packed"].rglob("*.bin"))
    assert shards and len(facts["data"]["shards_sha256"]) == len(shards)
    for p in shards:
        digest = _sha(p)
        assert facts["data"]["shards_sha256"][str(p.relative_to(run["packed"]))] == digest and digest in data_card
    assert facts["data"]["tokenizer_sha256"] == _sha(run["packed"] / "tokenizer" / "tokenizer.json")
    crawl = sorted((run["tinyweb"] / "corpus").glob("*.jsonl"))
    [cur] = facts["data"]["curation"]
    assert [i["sha256"] for i in cur["inputs"]] == [_sha(p) for p in crawl]
    assert all(_sha(p) in data_card for p in crawl)
    manifest = json.loads((run["curated"] / "manifest.json").read_text())
    assert cur["counts"] == manifest["counts"] and cur["counts"]["removed"] > 0
    assert "near_duplicate" in data_card  # removal reasons are listed
    # the curation profile and every heuristic threshold, as the manifest recorded them
    assert f"Profile `{manifest['config']['profile']}`" in data_card
    assert all(f"{k}={v}" in data_card for k, v in manifest["config"]["heuristics"].items())
    # the final validation loss is the one the run logged last
    last_eval = [json.loads(line) for line in (run["run"] / "metrics.jsonl").read_text().splitlines()
                 if "val_loss" in line][-1]
    assert facts["run"]["final_val_loss"] == last_eval["val_loss"]
    assert "Not evaluated yet" in model_card


def test_cards_include_eval_table_and_say_what_is_missing(run, tmp_path):
    evals = {"tasks": {"world_qa": {"acc": 0.25, "n": 40}}}
    write_cards(run["model"], None, evals=evals)
    card = (run["model"] / "README.md").read_text()
    assert "| world_qa | acc | 0.25 |" in card
    assert "recipe is unknown" in card
    assert "data unknown" in (run["model"] / "DATA_CARD.md").read_text()
    # the pre-training loop passes its last validation metrics as a flat dict
    write_cards(run["model"], run["run"], evals={"val_loss": 3.5, "val_bpb": 1.25})
    card = (run["model"] / "README.md").read_text()
    assert "| validation (training data) | val_loss | 3.5 |" in card and "| val_bpb | 1.25 |" in card


def test_run_facts_of_an_sft_run_without_token_counts(tmp_path):
    # SFT/RL metrics log assistant tokens, not pre-training token counts: the card must still be written
    import json

    from hytron.report.cards import run_facts

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.5, "assistant_tokens": 40}) + "\n")
    facts = run_facts(tmp_path)
    assert facts["tokens"] is None and facts["final_train_loss"] == 2.5 and facts["steps"] == 1
