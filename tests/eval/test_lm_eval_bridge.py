"""The lm-eval bridge scores local offline tasks item by item as lm-eval's own `hf` backend does."""

import json

import pytest

from hytron.eval.scoring import Scorer
from hytron.eval.tasks import multiple_choice, world_qa_items
from tests.fixtures.lm_eval_tasks import DOCS, write_mc_task

pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install 'hytron[eval]')")


ROLLING_TASK = """task: bridge_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
metadata:
  version: 1.0
"""
TEXTS = ["The river flows north to the sea.",
         "Once upon a time, a fox named Ilse lived at the edge of the wood. She liked apples. " * 4]  # > 64 tokens


def _local_tasks(root):
    root.mkdir(exist_ok=True)
    (root / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    write_mc_task(root, "bridge_mc")
    (root / "bridge_rolling.yaml").write_text(ROLLING_TASK.format(data=root / "texts.jsonl"))
    return root


def _per_item(lm, tasks):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    res = simple_evaluate(model=lm, tasks=["bridge_mc", "bridge_rolling"], log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(tasks), include_defaults=False))
    def number(r):  # a response: [ll] (rolling) or [(ll, is_greedy)] (multiple choice)
        while isinstance(r, (list, tuple)):
            r = r[0]
        return float(r)

    return {task: [[number(r) for r in s["resps"]] for s in sorted(samples, key=lambda s: s["doc_id"])]
            for task, samples in res["samples"].items()}


@pytest.mark.parametrize("kind", ["hytron", "nano2", "plain"])  # no BOS added; BOS added by the post-processor;
def test_per_item_loglikelihoods_equal_lm_evals_hf_backend(kind, tiny_run, foreign, tmp_path, monkeypatch):
    """`hytron eval --lm-eval` scores every item as `lm_eval --model hf` does on the same checkpoint (no extra
    BOS before the contexts, which moved hytron's numbers by up to 0.065 nats), rolling windows included."""
    pytest.importorskip("transformers")
    from lm_eval.models.huggingface import HFLM

    from hytron.eval.lm_eval_bridge import make_lm

    monkeypatch.chdir(tmp_path)
    model = tiny_run["model"] if kind == "hytron" else foreign(kind)  # ... BOS = EOS, no post-processor
    tasks = _local_tasks(tmp_path / "tasks")
    want = _per_item(HFLM(pretrained=str(model), device="cpu", dtype="float32", batch_size=8, max_length=64), tasks)
    got = _per_item(make_lm(Scorer.load(model, max_len=64)), tasks)
    assert len(got["bridge_mc"]) == len(DOCS) and len(got["bridge_rolling"]) == len(TEXTS)
    for task in want:
        for w, g in zip(want[task], got[task]):
            assert g == pytest.approx(w, abs=1e-4), (task, w, g)


def test_eval_cli_tasks_none_runs_only_lm_eval(tiny_run, tmp_path, monkeypatch, capsys):
    from hytron.cli import main

    monkeypatch.chdir(tmp_path)
    tasks = _local_tasks(tmp_path / "tasks")
    assert main(["eval", str(tiny_run["model"]), "--tasks", "none", "--lm-eval", "bridge_mc",
                 "--lm-eval-include", str(tasks), "--no-write"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["tasks"]) == ["lm_eval/bridge_mc"] and 0 <= out["tasks"]["lm_eval/bridge_mc"]["acc"] <= 1


def test_lm_eval_tinyweb_tasks_run_offline(tiny_run, tmp_path, monkeypatch):
    from hytron.eval.lm_eval_bridge import run_lm_eval, write_tinyweb_tasks

    monkeypatch.chdir(tmp_path)
    scorer = Scorer.load(tiny_run["model"])
    tasks = write_tinyweb_tasks(tiny_run["tinyweb"], tmp_path / "tasks", limit=16)
    res = run_lm_eval(scorer, ["hytron_world_qa", "hytron_arithmetic"], include_path=tasks)
    evals = tiny_run["tinyweb"] / "evals"
    ours = multiple_choice(scorer, world_qa_items(evals / "world_qa.jsonl", limit=16))
    assert res["n_samples"]["hytron_world_qa"] == ours["n"] == 16
    for task in ("hytron_world_qa", "hytron_arithmetic"):
        assert 0 <= res["tasks"][task]["acc"] <= 1 and 0 <= res["tasks"][task]["acc_norm"] <= 1


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
