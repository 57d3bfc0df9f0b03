"""The lm-eval bridge scores local offline tasks with the same numbers as hytron's own harness."""

import json

import pytest

from hytron.eval.scoring import Scorer
from hytron.eval.tasks import arithmetic_items, multiple_choice, world_qa_items

pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install 'hytron[eval]')")


def test_lm_eval_local_multiple_choice_matches_our_harness(tiny_run, tmp_path, monkeypatch):
    from hytron.eval.lm_eval_bridge import run_lm_eval, write_tinyweb_tasks

    monkeypatch.chdir(tmp_path)
    scorer = Scorer.load(tiny_run["model"])
    tasks = write_tinyweb_tasks(tiny_run["tinyweb"], tmp_path / "tasks", limit=16)
    res = run_lm_eval(scorer, ["hytron_world_qa", "hytron_arithmetic"], include_path=tasks)
    evals = tiny_run["tinyweb"] / "evals"
    ours_qa = multiple_choice(scorer, world_qa_items(evals / "world_qa.jsonl", limit=16))
    ours_ar = multiple_choice(scorer, arithmetic_items(evals / "arithmetic.jsonl", limit=16))
    assert res["tasks"]["hytron_world_qa"]["acc"] == pytest.approx(ours_qa["acc"])
    assert res["tasks"]["hytron_world_qa"]["acc_norm"] == pytest.approx(ours_qa["acc_norm"])
    assert res["tasks"]["hytron_arithmetic"]["acc"] == pytest.approx(ours_ar["acc"])
    assert res["n_samples"]["hytron_world_qa"] == 16


def test_lm_eval_generate_and_rolling_requests(tiny_run, tmp_path, monkeypatch):
    from hytron.eval.lm_eval_bridge import run_lm_eval

    monkeypatch.chdir(tmp_path)
    rows = [{"question": "What is 2 + 3?", "answer": "5"}, {"question": "Which river flows north?", "answer": "x"}]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "texts.jsonl").write_text(json.dumps({"text": "The river flows north to the sea."}) + "\n")
    (tmp_path / "gen.yaml").write_text(f"""task: hytron_gen_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tmp_path / 'qa.jsonl'}
output_type: generate_until
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: ["\\n"], max_gen_toks: 5, do_sample: false, temperature: 0.0}}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")
    (tmp_path / "ppl.yaml").write_text(f"""task: hytron_ppl_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tmp_path / 'texts.jsonl'}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
""")
    scorer = Scorer.load(tiny_run["model"])
    res = run_lm_eval(scorer, ["hytron_gen_local", "hytron_ppl_local"], include_path=tmp_path)["tasks"]
    assert 0.0 <= res["hytron_gen_local"]["exact_match"] <= 1.0
    [doc] = scorer.document_nll(["The river flows north to the sea."], eos=False)
    expected_bpb = doc["nll"] / 0.6931471805599453 / len(b"The river flows north to the sea.")
    assert res["hytron_ppl_local"]["bits_per_byte"] == pytest.approx(expected_bpb, rel=1e-6)
