"""`hytron serve` / `hytron chat` with --speculative-tokens: the same answers, acceptance in `usage` and /metrics,
and a one-line refusal (exit 2) for a model without an MTP head."""

import io
import sys

import pytest

from hytron.cli import main
from tests.conftest import randomize
from tests.infer.chatmodel import tiny_chat_model, train_tokenizer
from tests.infer.test_speculative import make_head_accurate
from tests.serve.conftest import running_server


@pytest.fixture(scope="module")
def mtp_dir(tmp_path_factory):
    tok = train_tokenizer()
    model = make_head_accurate(randomize(tiny_chat_model(tok, 0, num_nextn_predict_layers=1, mtp_pattern="*-")))
    path = tmp_path_factory.mktemp("mtp-chat") / "tiny-mtp"
    model.save_pretrained(path, tokenizer=tok)
    return path


def ask(server, **body):
    import httpx

    body = {"model": server.backend.name, "messages": [{"role": "user", "content": "Tell me about the river."}],
            "max_tokens": 40, "temperature": 0, **body}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_served_answers_are_the_same_and_usage_reports_acceptance(mtp_dir):
    import httpx

    with running_server(mtp_dir, max_len=512) as plain:
        want = ask(plain)
        assert "speculative" not in want["usage"]
        assert "hytron_spec_decode" not in httpx.get(plain.url + "/metrics").text
    with running_server(mtp_dir, max_len=512, speculative_tokens=3) as spec:
        got = ask(spec)
        metrics = httpx.get(spec.url + "/metrics").text
    assert got["choices"][0]["message"] == want["choices"][0]["message"]
    assert got["usage"]["completion_tokens"] == want["usage"]["completion_tokens"]
    s = got["usage"]["speculative"]
    assert 0 < s["accepted_tokens"] <= s["draft_tokens"] and s["draft_tokens"] % 3 == 0
    assert s["acceptance_rate"] == pytest.approx(s["accepted_tokens"] / s["draft_tokens"])
    assert 1 < s["mean_accepted_length"] <= 4
    assert f'hytron_spec_decode_num_accepted_tokens_total{{model_name="tiny-mtp"}} {float(s["accepted_tokens"])}' \
        in metrics
    assert 'hytron_spec_decode_acceptance_rate{model_name="tiny-mtp"}' in metrics
    assert 'hytron_spec_decode_mean_accepted_length{model_name="tiny-mtp"}' in metrics


def test_chat_with_speculation_reports_tokens_per_step(mtp_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n/quit\n"))
    assert main(["chat", str(mtp_dir), "--temperature", "0", "--max-tokens", "12", "--threads", "1",
                 "--max-model-len", "512", "--speculative-tokens", "2"]) == 0
    assert "tokens per step (" in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["serve", "chat"])
def test_speculation_without_an_mtp_head_is_one_line_and_exit_2(model_dir, capsys, verb):
    assert main([verb, str(model_dir), "--speculative-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"hytron {verb}: error:") and "MTP head" in err
