"""`hytron eval` on a real tiny run: TinyWeb tasks, JSON results, cards refreshed; multiple-choice items."""

import json
import math

import pytest

from hytron.cli import main
from hytron.eval.scoring import Scorer
from hytron.eval.tasks import arithmetic_items, multiple_choice, world_qa_items


def test_world_qa_items_are_fair_multiple_choice(tiny_run):
    path = tiny_run["tinyweb"] / "evals" / "world_qa.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    items = world_qa_items(path)
    assert items == world_qa_items(path)  # deterministic
    assert len(items) == len(rows)
    answers = {r["relation"]: {x["answer"] for x in rows if x["relation"] == r["relation"]} for r in rows}
    for row, item in zip(rows, items):
        assert item["choices"][item["label"]] == row["answer"]
        assert len(set(item["choices"])) == 4
        if len(answers[row["relation"]]) >= 4:  # distractors are values of the same relation
            assert set(item["choices"]) <= answers[row["relation"]]
    labels = [it["label"] for it in items]
    assert all(labels.count(k) > len(items) / 8 for k in range(4))  # the answer is not always first
    for it in arithmetic_items(tiny_run["tinyweb"] / "evals" / "arithmetic.jsonl", limit=50):
        assert len(set(it["choices"])) == 4 and str(eval(it["question"].removeprefix("What is ").rstrip("?"))) \
            == it["choices"][it["label"]]


def test_multiple_choice_accuracy_tracks_the_models_preference(tiny_run):
    scorer = Scorer.load(tiny_run["model"])
    items = world_qa_items(tiny_run["tinyweb"] / "evals" / "world_qa.jsonl", limit=12)
    # relabel every item with the model's own favourite: accuracy must be 1; with a non-favourite: 0
    fav = []
    for it in items:
        lps = [lp for lp, _ in scorer.loglikelihood([(f"Question: {it['question']}\nAnswer:", " " + c)
                                                     for c in it["choices"]])]
        fav.append(max(range(4), key=lambda k: lps[k]))
    assert multiple_choice(scorer, [{**it, "label": f} for it, f in zip(items, fav)])["acc"] == 1.0
    assert multiple_choice(scorer, [{**it, "label": (f + 1) % 4} for it, f in zip(items, fav)])["acc"] == 0.0


def test_hytron_eval_cli_writes_json_and_refreshes_cards(tiny_run, capsys):
    from hytron.report.cards import write_cards

    write_cards(tiny_run["model"], tiny_run["run"])
    assert main(["eval", str(tiny_run["model"]), "--limit", "8"]) == 0  # evals found through the model card
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tiny_run["model"] / "eval.json").read_text())
    assert printed == saved
    assert saved["settings"]["evals_source"] == "model card (training crawl)"
    t = saved["tasks"]
    assert set(t) == {"validation", "world_qa", "arithmetic"}
    assert t["world_qa"]["n"] == 8 and t["world_qa"]["chance"] == 0.25
    v = t["validation"]
    assert v["docs"] == 8 and 0 < v["loss"] < 10
    assert v["bpb"] == pytest.approx(v["loss"] * v["tokens"] / math.log(2) / v["bytes"])
    card = (tiny_run["model"] / "README.md").read_text()
    assert f"| world_qa | acc | {t['world_qa']['acc']:.4g} |" in card
    assert "recipe is unknown" not in card  # the refresh kept the run


def test_eval_names_unknown_tasks(tiny_run, capsys):
    assert main(["eval", str(tiny_run["model"]), "--tasks", "validation,trivia", "--no-write", "--limit", "2"]) == 2
    assert "unknown task(s) ['trivia']" in capsys.readouterr().err


def test_eval_reasoning_task_runs_the_reasoning_evaluation(tmp_path, capsys):
    from tests.infer.chatmodel import save_chat_model

    model = save_chat_model(tmp_path / "chat")
    assert main(["eval", str(model), "--tasks", "reasoning", "--reasoning-n", "2", "--budgets", "0,none",
                 "--max-tokens", "12"]) == 0
    r = json.loads((model / "eval.json").read_text())["tasks"]["reasoning"]
    assert r["n"] == 2 and [c["budget"] for c in r["curve"]] == [0, None]
    assert 0 <= r["accuracy"] <= 1 and "no_think" in r
    assert r["curve"][0]["mean_thinking_tokens"] <= r["curve"][1]["mean_thinking_tokens"]
