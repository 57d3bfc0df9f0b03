"""Issue 24 item 4: penalties, skip_special_tokens, reasoning_effort and the server's default template kwargs.

Each as a client sees it: a frequency penalty makes a greedy completion repeat itself less; a generated special
token is left out of the text unless `skip_special_tokens` is false; `--default-chat-template-kwargs
'{"enable_thinking": false}'` gives a plain OpenAI client answers without a thinking phase.
"""

import collections
import subprocess
import sys

import pytest

from hytron.cli import main
from tests.serve.conftest import running_server

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Where does the river Alder rise?"}]


def _greedy(http, **kw):
    body = {"prompt": "The river Alder rises on Mount Kell", "max_tokens": 48, "temperature": 0,
            "ignore_eos": True, "logprobs": 0, **kw}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_frequency_penalty_reduces_repetition(http):
    plain = _greedy(http)["logprobs"]["tokens"]
    penalized = _greedy(http, frequency_penalty=2.0)["logprobs"]["tokens"]
    assert len(plain) == len(penalized) == 48
    most = collections.Counter(plain).most_common(1)[0][1]
    assert most > 1 and len(set(plain)) < 48  # greedy decoding of the tiny model loops ...
    assert len(set(penalized)) > len(set(plain))  # ... and the penalty breaks the loop
    assert collections.Counter(penalized).most_common(1)[0][1] < most
    # presence and repetition penalties are applied too (and change the output), in chat as well
    assert _greedy(http, repetition_penalty=1.5)["logprobs"]["tokens"] != plain
    assert _greedy(http, presence_penalty=2.0)["logprobs"]["tokens"] != plain
    r = http.post(CHAT, json={"messages": HI, "max_tokens": 8, "temperature": 0, "presence_penalty": -0.5,
                              "frequency_penalty": 0.5, "repetition_penalty": 1.2})
    assert r.status_code == 200, r.text


def test_skip_special_tokens(http, server):
    tok = server.backend.tokenizer
    call = tok.token_to_id("<tool_call>")
    body = {"prompt": "Hello", "max_tokens": 3, "temperature": 0, "logit_bias": {str(call): 100}, "logprobs": 0}
    default = http.post("/v1/completions", json=body).json()["choices"][0]
    assert default["logprobs"]["tokens"] == ["<tool_call>"] * 3  # the model emits the special token ...
    assert default["text"] == ""  # ... and, as in vLLM, it is not written into the text
    shown = http.post("/v1/completions", json={**body, "skip_special_tokens": False}).json()["choices"][0]
    assert shown["text"] == "<tool_call>" * 3
    packed = http.post("/v1/completions", json={**body, "skip_special_tokens": False,
                                                "spaces_between_special_tokens": False}).json()["choices"][0]
    assert packed["text"] == "<tool_call>" * 3  # a byte-level tokenizer puts no spaces there either way
    # streamed the same
    r = http.post("/v1/completions", json={**body, "skip_special_tokens": False, "stream": True})
    assert "".join(c["choices"][0]["text"] for c in _chunks(r.text)) == "<tool_call>" * 3
    # chat: the thinking markers never reach the text, even with skip_special_tokens false
    chat = {"messages": HI, "max_tokens": 6, "temperature": 0, "thinking_token_budget": 2,
            "skip_special_tokens": False}
    msg = http.post(CHAT, json=chat).json()["choices"][0]["message"]
    assert "</think>" not in (msg["reasoning"] or "") + (msg["content"] or "")


def _chunks(text):
    import json

    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def _reasoning_tokens(http, **kw):
    r = http.post(CHAT, json={"messages": HI, "max_tokens": 100, "temperature": 0, **kw})
    assert r.status_code == 200, r.text
    out = r.json()
    return out["usage"]["completion_tokens_details"]["reasoning_tokens"], out["choices"][0]["message"]


def test_reasoning_effort_maps_onto_thinking_and_budget(http):
    free, _ = _reasoning_tokens(http)
    assert free == 100  # the tiny model thinks until max_tokens
    minimal, msg = _reasoning_tokens(http, reasoning_effort="minimal")
    assert 64 <= minimal <= 64 + 7 + 2  # budget 64, grace 10%, a forced newline and </think>
    assert msg["content"]
    none, msg = _reasoning_tokens(http, reasoning_effort="none")
    assert none == 0 and msg["reasoning"] is None
    assert _reasoning_tokens(http, reasoning_effort="high")[0] == 100
    assert _reasoning_tokens(http, reasoning_effort="minimal", thinking_token_budget=8)[0] <= 8 + 1 + 2
    r = http.post(CHAT, json={"messages": HI, "reasoning_effort": "none",
                              "chat_template_kwargs": {"enable_thinking": True}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning_effort"
    r = http.post(CHAT, json={"messages": HI, "reasoning_effort": "extreme"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning_effort"


def test_default_chat_template_kwargs_turn_thinking_off_for_a_plain_client(model_dir):
    openai = pytest.importorskip("openai")
    with running_server(model_dir, default_chat_template_kwargs={"enable_thinking": False}) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=60)
        out = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=12, temperature=0)
        assert out.usage.completion_tokens_details.reasoning_tokens == 0
        assert out.choices[0].message.content and getattr(out.choices[0].message, "reasoning", None) is None
        # a request still turns thinking on for itself
        on = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=12, temperature=0,
                                            extra_body={"chat_template_kwargs": {"enable_thinking": True}})
        assert on.usage.completion_tokens_details.reasoning_tokens == 12
        low = client.chat.completions.create(model="tiny-chat", messages=HI, max_tokens=12, temperature=0,
                                             reasoning_effort="low")
        assert low.usage.completion_tokens_details.reasoning_tokens == 12
        # /tokenize renders what a chat request would prefill: the thinking closed
        import httpx

        ids = httpx.post(s.url + "/tokenize", json={"messages": HI}, timeout=60).json()["tokens"]
        assert not s.backend.opens_thinking(ids)


def test_default_chat_template_kwargs_flag_is_validated_at_start(model_dir, capsys):
    from hytron.cli import build_parser
    from hytron.cli.serve import _config

    args = build_parser().parse_args(["serve", str(model_dir), "--default-chat-template-kwargs",
                                      '{"enable_thinking": false, "custom": 1}'])
    assert _config(args).default_chat_template_kwargs == {"enable_thinking": False, "custom": 1}
    for bad, says in [('{"enable_thinking": fals}', "not JSON"), ('["x"]', "must be a JSON object")]:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", str(model_dir), "--default-chat-template-kwargs", bad])
        assert says in capsys.readouterr().err
    for bad, says in [('{"enable_thinking": "no"}', "enable_thinking must be true or false"),
                      ('{"messages": []}', "'messages' is set by the request")]:
        assert main(["serve", str(model_dir), "--default-chat-template-kwargs", bad]) == 2
        err = capsys.readouterr().err
        assert "default_chat_template_kwargs" in err and says in err


@pytest.mark.slow
def test_hytron_serve_with_default_kwargs_serves_without_thinking(model_dir, tmp_path):
    import socket

    import httpx

    from tests.serve.conftest import wait_for_health

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "hytron", "serve", str(model_dir), "--port", str(port),
                             "--threads", "1", "--default-chat-template-kwargs", '{"enable_thinking": false}'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(proc, url)
        out = httpx.post(url + CHAT, json={"messages": HI, "max_tokens": 8}, timeout=60).json()
        assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
        assert out["choices"][0]["message"]["reasoning"] is None
    finally:
        proc.terminate()
        proc.wait(30)
