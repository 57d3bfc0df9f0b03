"""Every malformed request gets an OpenAI error body with the right 4xx, and the server keeps serving."""

import json
import time

import httpx
import pytest

from tests.serve.conftest import API_KEY, running_server

CHAT = "/v1/chat/completions"
OK_CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def assert_error(r: httpx.Response, status: int, kind: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if kind:
        assert err["type"] == kind
    if param:
        assert err["param"] == param
    return err


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b"", None),
    (json.dumps({"messages": "hi"}).encode(), "messages"),
    (json.dumps({"messages": []}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), "messages.0.role"),
    (json.dumps({**OK_CHAT, "max_tokens": "many"}).encode(), "max_tokens"),
    (json.dumps({**OK_CHAT, "max_tokens": 0}).encode(), "max_tokens"),
    (json.dumps({**OK_CHAT, "temperature": -1}).encode(), "temperature"),
    (json.dumps({**OK_CHAT, "top_p": 0}).encode(), "top_p"),
    (json.dumps({**OK_CHAT, "stream": "yes"}).encode(), "stream"),
    (json.dumps({**OK_CHAT, "stop": [1, 2]}).encode(), None),
    (json.dumps({**OK_CHAT, "n": 0}).encode(), "n"),
    (json.dumps({**OK_CHAT, "seed": 2**70}).encode(), "seed"),
    (json.dumps({**OK_CHAT, "thinking_token_budget": -1}).encode(), "thinking_token_budget"),
])
def test_malformed_chat_requests_are_400(http, body, param):
    r = http.post(CHAT, content=body, headers={"content-type": "application/json"})
    err = assert_error(r, 400, "invalid_request_error")
    if param:
        assert err["param"] == param


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": [5, -1]}, None),
    ("/v1/completions", {"prompt": [5, 100000]}, "prompt"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "suffix": "y"}, "suffix"),
    ("/v1/completions", {"prompt": "x", "n": 9}, "n"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 257}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "stop_token_ids": [100000]}, "stop_token_ids"),
    (CHAT, {**OK_CHAT, "presence_penalty": 2.5}, "presence_penalty"),
    (CHAT, {**OK_CHAT, "repetition_penalty": 0}, "repetition_penalty"),
    ("/v1/completions", {"prompt": "x", "frequency_penalty": -3}, "frequency_penalty"),
    (CHAT, {**OK_CHAT, "skip_special_tokens": "no"}, "skip_special_tokens"),
    (CHAT, {**OK_CHAT, "top_logprobs": 2}, "top_logprobs"),
    ("/tokenize", {}, "prompt"),
    ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt"),
    ("/detokenize", {"tokens": [100000]}, "tokens"),
    ("/detokenize", {"tokens": "abc"}, "tokens"),
])
def test_bad_values_are_400_naming_the_param(http, path, body, param):
    err = assert_error(http.post(path, json=body), 400, "invalid_request_error")
    if param:
        assert err["param"] == param


def test_too_long_prompt_is_400_context_length_exceeded(http):
    long_text = "river " * 600  # > 512 tokens of context
    err = assert_error(http.post(CHAT, json={"messages": [{"role": "user", "content": long_text}]}), 400)
    assert err["code"] == "context_length_exceeded" and "maximum context length is 512" in err["message"]
    err = assert_error(http.post("/v1/completions", json={"prompt": [5] * 500, "max_tokens": 20}), 400)
    assert err["code"] == "context_length_exceeded"


def test_unknown_model_is_404(http):
    err = assert_error(http.post(CHAT, json={**OK_CHAT, "model": "gpt-9"}), 404, param="model")
    assert err["code"] == "model_not_found"
    assert_error(http.get("/v1/models/gpt-9"), 404)
    assert_error(http.post("/v1/completions", json={"model": "gpt-9", "prompt": "x"}), 404)


def test_unknown_route_and_wrong_method_are_json(http):
    assert_error(http.get("/v1/nothing-here"), 404)
    assert_error(http.get(CHAT), 405)


def test_api_key_is_required_everywhere_but_health_and_the_page(server):
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        for method, path in [("GET", "/v1/models"), ("POST", CHAT), ("POST", "/v1/completions"),
                             ("POST", "/tokenize"), ("GET", "/tokenizer_info"), ("GET", "/metrics"),
                             ("GET", "/openapi.json")]:
            assert_error(anon.request(method, path, json=OK_CHAT), 401, "authentication_error")
            assert_error(anon.request(method, path, json=OK_CHAT, headers={"Authorization": "Bearer wrong"}), 401)
        assert anon.get("/health").json() == {"status": "ok"}
        assert anon.get("/").status_code == 200
        assert anon.get("/v1/models", headers={"x-api-key": API_KEY}).status_code == 200


def test_oversized_body_is_413(http):
    r = http.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 70_000}]})
    assert_error(r, 413)


def test_server_keeps_serving_after_errors(http):
    for _ in range(3):
        http.post(CHAT, content=b"{{{")
    r = http.post(CHAT, json={**OK_CHAT, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    metrics = http.get("/metrics").text
    assert 'hytron_http_requests_total{status="400"}' in metrics


def test_full_queue_is_429_with_retry_after(model_dir):
    # the first request holds the only slot while the second arrives. It is a plain (non-streamed) request on its
    # own thread: a stream the test stops reading could be cancelled by the server's disconnect watcher first,
    # which freed the slot and made this test flaky (about 1 run in 6 on a loaded machine)
    import threading

    with running_server(model_dir, max_slots=1, max_waiting=0, max_len=2048) as s, \
            httpx.Client(base_url=s.url, timeout=120) as c:
        long = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000, "ignore_eos": True}
        first: dict = {}
        holder = threading.Thread(target=lambda: first.update(r=c.post(CHAT, json=long)))
        holder.start()
        deadline = time.monotonic() + 10
        while not s.engine.num_active and time.monotonic() < deadline:
            time.sleep(0.005)
        assert s.engine.num_active == 1  # the first request holds the only slot
        r = c.post(CHAT, json=OK_CHAT)
        busy = s.engine.num_active == 1  # still held when the refusal came back
        holder.join(timeout=120)
        assert first["r"].status_code == 200 and first["r"].json()["usage"]["completion_tokens"] == 2000
        if r.status_code != 429 and not busy:  # the 2,000 tokens finished before the second request got in
            pytest.skip("the first request finished before the second arrived; no queue to fill")
        err = assert_error(r, 429, "rate_limit_error")
        assert err["code"] == "queue_full" and r.headers["retry-after"] == "1"
        # the slot frees up and the server serves again
        assert s.engine.num_active == 0
        r = c.post(CHAT, json=OK_CHAT)
        assert r.status_code == 200
