"""Tokenizer endpoints (vLLM's field names), Prometheus metrics, health, and `hytron serve` from the CLI."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest


def test_tokenize_detokenize_round_trip(http, server):
    tok = server.backend.tokenizer
    r = http.post("/tokenize", json={"prompt": "The river Alder 🚀", "return_token_strs": True}).json()
    assert r["tokens"] == tok.encode("The river Alder 🚀") and r["count"] == len(r["tokens"])
    assert r["max_model_len"] == 512 and len(r["token_strs"]) == r["count"]
    assert http.post("/detokenize", json={"tokens": r["tokens"]}).json() == {"prompt": "The river Alder 🚀"}
    messages = [{"role": "user", "content": "Hi /no_think"}]
    chat = http.post("/tokenize", json={"messages": messages}).json()
    assert chat["tokens"] == tok.apply_chat_template(messages, add_generation_prompt=True)
    assert chat["tokens"][-2:] == [tok.think_start_id, tok.think_end_id]


def test_tokenizer_info_is_what_lm_eval_reads(http, server):
    info = http.get("/tokenizer_info").json()
    assert info["eos_token"] == "</s>" and info["bos_token"] == "<s>" and info["pad_token"] == "<pad>"
    assert info["chat_template"] == server.backend.tokenizer.chat_template
    assert info["model_max_length"] == 512


def test_metrics_count_tokens_requests_and_latency(http):
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6,
                                                "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200
    text = http.get("/metrics").text

    def value(name: str) -> float:
        m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
        assert m, f"{name} missing"
        return float(m.group(1))

    assert value("hytron_generation_tokens_total") >= 6 and value("hytron_prompt_tokens_total") > 0
    assert value("hytron_num_requests_running") == 0 and value("hytron_num_requests_waiting") == 0
    assert value("hytron_time_to_first_token_seconds_count") >= 1
    assert value("hytron_e2e_request_latency_seconds_count") >= 1
    assert 'hytron_request_success_total{finished_reason="length",model_name="tiny-chat"}' in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_hytron_serve_cli(model_dir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hytron", "serve", str(model_dir), "--port", str(port),
                             "--api-key", "k-1", "--threads", "1", "--max-model-len", "256"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HYTRON_API_KEY": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        assert httpx.get(url + "/v1/models", timeout=10).status_code == 401
        models = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer k-1"}, timeout=10).json()
        assert models["data"][0]["id"] == "tiny-chat" and models["data"][0]["max_model_len"] == 256
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"on http://127.0.0.1:{port}" in out
