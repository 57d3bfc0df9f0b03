"""Verbs on checkpoints written by transformers; broken model files are one clear line and exit code 2."""

import io
import json
import math
import shutil

import pytest

from hytron.cli import main

pytest.importorskip("transformers")


def test_eval_runs_on_a_bf16_transformers_checkpoint(foreign, capsys):
    assert main(["eval", str(foreign("nemotron3")), "--tasks", "validation,world_qa", "--limit", "4",
                 "--no-write"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert math.isfinite(out["tasks"]["validation"]["bpb"]) and out["tasks"]["world_qa"]["n"] == 4


def test_chat_runs_on_a_nano2_checkpoint_with_scripted_input(foreign):
    from hytron.serve import ServeConfig
    from hytron.serve.terminal import ChatSettings, chat_loop

    settings = ChatSettings(thinking=True, max_thinking_tokens=3, max_tokens=8, temperature=0.0, seed=0)
    out = io.StringIO()
    assert chat_loop(foreign("nano2"), ServeConfig(max_len=256, max_slots=1, threads=1), settings,
                     io.StringIO("What is 6 times 7?\n/no_think\nAnd 6 times 8?\n/quit\n"), out) == 0
    lines = out.getvalue().splitlines()
    assert "thinking on" in lines[0] and any("[thinking off]" in x for x in lines)
    ends = [x for x in lines if x.startswith("[") and "tokens" in x]
    assert len(ends) == 2 and "0 thinking" in ends[1] and "0 thinking" not in ends[0]


def test_chat_refuses_a_model_without_template(foreign, capsys):
    assert main(["chat", str(foreign("plain"))]) == 2
    assert "no chat template" in capsys.readouterr().err


BROKEN = [
    ("tokenizer.json", "\x00garbage", "tokenizer.json: not a valid tokenizer.json"),
    ("tokenizer.json", "{}", "tokenizer.json: not a valid tokenizer.json"),
    ("config.json", "[]", "config.json: must hold a JSON object"),
    ("tokenizer_config.json", "{\"bos_token\": ", "tokenizer_config.json: not valid JSON"),
    ("chat_template.jinja", "{% if messages %}never closed", "chat_template.jinja: chat template syntax error"),
    ("config.json", "max_position_embeddings=-5", "max_position_embeddings: must be an integer in 0..16777216"),
]


@pytest.mark.parametrize("verb", ["serve", "chat", "eval"])
@pytest.mark.parametrize("file, content, match", BROKEN, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BROKEN)])
def test_broken_model_files_are_one_line_and_exit_2(foreign, tmp_path, capsys, verb, file, content, match):
    d = tmp_path / "model"
    shutil.copytree(foreign("nemotron3"), d)
    if content.startswith("max_position_embeddings="):
        cfg = json.loads((d / file).read_text())
        cfg["max_position_embeddings"] = -5
        content = json.dumps(cfg)
    (d / file).write_text(content)
    assert main([verb, str(d)] + (["--no-write"] if verb == "eval" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err and "Traceback" not in err
