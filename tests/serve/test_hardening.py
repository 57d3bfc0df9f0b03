"""Defects a hostile client found (issue 16), each reproduced over HTTP against a real uvicorn server.

Text that is not Unicode, a body labelled text/plain, a foreign Host, a cross-site preflight, numbers sent as
strings, requests that can never be admitted, image parts; and the published schema agreeing with the
validation on the cases where they used to disagree.
"""

import json
import threading
import time

import httpx
import jsonschema
import pytest

from tests.serve.conftest import API_KEY, running_server

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON = {"content-type": "application/json"}


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


# ---- 1. lone surrogates: 400 naming the field, and the connection stays usable -------------------------------
@pytest.mark.parametrize("path, raw, param", [
    (CHAT, '{"messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 2}', "messages.0.content"),
    (CHAT, '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
     "messages.0.content.0.text"),
    (CHAT, '{"model": "x\\ud800", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    (CHAT, '{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud83d"]}', "stop.0"),
    ("/v1/completions", '{"prompt": "a\\ud800b", "max_tokens": 2}', "prompt"),
    ("/v1/completions", '{"prompt": ["ok", "\\ud800"], "max_tokens": 2}', "prompt.1"),
    ("/v1/completions", '{"model": "\\ud800", "prompt": "hi"}', "model"),
    ("/tokenize", '{"prompt": "a\\ud800b"}', "prompt"),
    ("/tokenize", '{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages.0.content"),
])
def test_lone_surrogates_are_400_naming_the_field(server, path, raw, param):
    with httpx.Client(base_url=server.url, headers={**AUTH, **JSON}, timeout=60) as c:
        err = error_of(c.post(path, content=raw.encode()), 400)
        assert err["param"] == param and "lone surrogate" in err["message"]
        # same keep-alive connection, still served (a crash used to reset it)
        r = c.post(CHAT, json={"messages": HI, "max_tokens": 2})
        assert r.status_code == 200
        assert c.get("/metrics").text.count('hytron_http_requests_total{status="500"}') == 0


def test_body_that_is_not_utf8_is_400(http):
    r = http.post(CHAT, content=b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', headers=JSON)
    assert error_of(r, 400)["type"] == "invalid_request_error"


# ---- 2. CPU work off the event loop ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_huge_tokenize_does_not_stall_other_requests(model_dir):
    text = "The river Alder rises on Mount Kell. " * 40_000  # 1.5 MB: seconds of tokenizing
    with running_server(model_dir, max_body_bytes=4 << 20) as s, httpx.Client(base_url=s.url, timeout=120) as c:
        done = threading.Event()
        result = {}

        def big():
            t0 = time.monotonic()
            result["r"] = c.post("/tokenize", json={"prompt": text})
            result["seconds"] = time.monotonic() - t0
            done.set()

        t = threading.Thread(target=big)
        with httpx.Client(base_url=s.url, timeout=120) as probe:
            probe.get("/health")  # connected before the big request starts
            t.start()
            answered = [time.monotonic()]
            while not done.is_set():
                assert probe.get("/health").status_code == 200
                answered.append(time.monotonic())
        t.join()
        assert result["r"].status_code == 200 and result["r"].json()["count"] > 100_000
        # before: the event loop tokenized, so /health went unanswered for most of the big request's time
        longest_wait = max(b - a for a, b in zip(answered, answered[1:]))
        assert longest_wait < 0.5 * result["seconds"], (longest_wait, result["seconds"])


def test_prompt_far_over_the_context_is_refused_before_tokenizing(model_dir):
    long_text = "river " * 300_000  # 1.8 MB, context 512
    with running_server(model_dir, max_len=512, max_body_bytes=4 << 20) as s, \
            httpx.Client(base_url=s.url, timeout=120) as c:
        for path, body, param in [(CHAT, {"messages": [{"role": "user", "content": long_text}]}, "messages"),
                                  ("/v1/completions", {"prompt": long_text}, "prompt")]:
            err = error_of(c.post(path, json=body), 400)
            assert err["code"] == "context_length_exceeded" and err["param"] == param
            assert "maximum context length is 512 tokens" in err["message"] and "at least" in err["message"]


# ---- 4. cross-site requests: JSON only, Host checked, CORS off unless asked ----------------------------------
@pytest.fixture(scope="module")
def keyless(model_dir):
    with running_server(model_dir, max_len=512) as s:
        yield s


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_json_routes_refuse_other_content_types(keyless, content_type):
    body = json.dumps({"messages": HI, "max_tokens": 2}).encode()
    headers = {"content-type": content_type} if content_type else {}
    r = httpx.post(keyless.url + CHAT, content=body, headers=headers, timeout=60)
    assert "application/json" in error_of(r, 415)["message"]
    assert keyless.engine.num_active == 0  # nothing was generated
    ok = httpx.post(keyless.url + CHAT, content=body, headers={"content-type": "application/json; charset=utf-8"},
                    timeout=60)
    assert ok.status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""])
def test_foreign_host_is_refused(keyless, host):
    r = httpx.get(keyless.url + "/v1/models", headers={"host": host}, timeout=30)
    assert "Host" in error_of(r, 400)["message"]
    r = httpx.post(keyless.url + CHAT, json={"messages": HI, "max_tokens": 2}, headers={"host": host}, timeout=30)
    assert r.status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST:1234", "[::1]:8000"])
def test_local_host_names_are_served(keyless, host):
    assert httpx.get(keyless.url + "/v1/models", headers={"host": host}, timeout=30).status_code == 200


def test_allowed_hosts_are_configurable(model_dir):
    with running_server(model_dir, allowed_hosts=("llm.internal", "*.corp.example")) as s:
        def status(host):
            return httpx.get(s.url + "/health", headers={"host": host}, timeout=30).status_code
        assert status("llm.internal:8000") == 200 and status("a.corp.example") == 200
        assert status("127.0.0.1") == 400 and status("corp.example.evil") == 400


def test_cors_is_off_by_default(keyless):
    preflight = httpx.options(keyless.url + CHAT, timeout=30, headers={
        "origin": "https://evil.example", "access-control-request-method": "POST",
        "access-control-request-headers": "content-type"})
    assert preflight.status_code >= 400 and "access-control-allow-origin" not in preflight.headers
    r = httpx.get(keyless.url + "/v1/models", headers={"origin": "https://evil.example"}, timeout=30)
    assert "access-control-allow-origin" not in r.headers


def test_cors_origins_can_be_allowed(model_dir):
    with running_server(model_dir, api_key=API_KEY, cors_origins=("https://app.example",)) as s:
        ask = {"access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type"}
        ok = httpx.options(s.url + CHAT, headers={"origin": "https://app.example", **ask}, timeout=30)
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        bad = httpx.options(s.url + CHAT, headers={"origin": "https://evil.example", **ask}, timeout=30)
        assert bad.headers.get("access-control-allow-origin") != "https://evil.example"
        r = httpx.get(s.url + "/v1/models", headers={"origin": "https://app.example", **AUTH}, timeout=30)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"


# ---- 7. validation nits ----------------------------------------------------------------------------------
@pytest.mark.parametrize("body, param, says", [
    ({"messages": HI, "temperature": "0.5"}, "temperature", "valid number"),
    ({"messages": HI, "temperature": True}, "temperature", "valid number"),
    ({"messages": HI, "top_p": "1"}, "top_p", "valid number"),
    ({"messages": HI, "stream_options": {"include_usage": True}}, "stream_options", "stream=true"),
    ({"messages": HI, "stream": False, "stream_options": {}}, "stream_options", "stream=true"),
    ({"messages": HI, "stop": ["s"] * 65}, "stop", "at most 64"),
    ({"messages": HI, "stop": [1, 2]}, "stop.0", "valid string"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "messages.0.content.0", "images are not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages.0.content.0", "'input_audio' are not supported"),
])
def test_validation_names_the_real_problem(http, body, param, says):
    err = error_of(http.post(CHAT, json=body), 400)
    assert err["param"] == param and says in err["message"], err
    assert ".str" not in err["message"] and "list[" not in err["message"]


def test_numbers_stay_numbers(http):
    for t in (0, 1, 0.5):
        assert http.post(CHAT, json={"messages": HI, "temperature": t, "max_tokens": 2}).status_code == 200
    streamed = {"messages": HI, "max_tokens": 2, "stream": True, "stream_options": {"include_usage": True}}
    r = http.post(CHAT, json=streamed)
    assert r.status_code == 200 and '"usage"' in r.text


def test_request_that_can_never_be_admitted_is_400_not_429(model_dir):
    with running_server(model_dir, max_slots=1, max_waiting=2, max_n=8) as s, \
            httpx.Client(base_url=s.url, timeout=60) as c:
        err = error_of(c.post("/v1/completions", json={"prompt": ["a", "b"], "n": 2, "max_tokens": 1}), 400)
        assert err["code"] == "limit_exceeded" and "at most 3" in err["message"]
        err = error_of(c.post(CHAT, json={"messages": HI, "n": 4, "max_tokens": 1}), 400)
        assert err["param"] == "n"
        assert c.post(CHAT, json={"messages": HI, "n": 3, "max_tokens": 1}).status_code == 200


# ---- 7. the published schema and the validation agree ------------------------------------------------------
AGREEMENT = [  # (path, body): the schema's verdict must be the server's (200, or 400)
    ("/tokenize", {"prompt": None, "messages": None}),
    ("/tokenize", {}),
    ("/tokenize", {"prompt": "a", "messages": HI}),
    ("/tokenize", {"prompt": "a", "messages": None}),
    ("/tokenize", {"prompt": ""}),
    ("/v1/completions", {"prompt": "", "max_tokens": 1}),
    ("/v1/completions", {"prompt": ["a", ""], "max_tokens": 1}),
    ("/v1/completions", {"prompt": "a", "max_tokens": 1, "suffix": "b"}),
    ("/v1/completions", {"prompt": "a", "max_tokens": 1, "best_of": 2}),
    ("/v1/completions", {"prompt": "a", "max_tokens": 1, "stream_options": {}}),
    (CHAT, {"messages": HI, "max_tokens": 1, "top_logprobs": 0, "logprobs": False}),
    (CHAT, {"messages": HI, "max_tokens": 1, "top_logprobs": 2, "logprobs": False}),
    (CHAT, {"messages": HI, "max_tokens": 1, "top_logprobs": 2, "logprobs": True}),
    (CHAT, {"messages": HI, "max_tokens": 1, "presence_penalty": 0.5}),
    (CHAT, {"messages": HI, "max_tokens": 1, "temperature": "0.5"}),
    (CHAT, {"messages": HI, "max_tokens": 1, "n": 2.0}),
    (CHAT, {"messages": HI, "max_tokens": 1, "n": 1.5}),
    (CHAT, {"messages": HI, "max_completion_tokens": 0}),  # the bounds of integer fields are in the schema
    (CHAT, {"messages": HI, "max_tokens": 1, "top_k": -2}),
    (CHAT, {"messages": HI, "max_tokens": 1, "stop": [""]}),
    (CHAT, {"max_tokens": 1, "messages": [{"role": "user", "tool_calls": [{"function": {"name": "f",
                                                                                     "arguments": "{}"}}]}]}),
    ("/detokenize", {"tokens": [5.0, 6]}),
    ("/detokenize", {"tokens": [5.5]}),
    ("/detokenize", {"tokens": [True]}),
]


@pytest.fixture(scope="module")
def openapi(server):
    return httpx.get(server.url + "/openapi.json", headers=AUTH, timeout=30).json()


@pytest.mark.parametrize("path, body", AGREEMENT)
def test_schema_and_validation_agree(http, openapi, path, body):
    ref = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**ref, "components": openapi["components"]})
    schema_ok = validator.is_valid(body)
    r = http.post(path, json=body)
    assert r.status_code == (200 if schema_ok else 400), (schema_ok, r.text)
