"""Opt-in: llama.cpp's own `llama-server` (its C++ Jinja engine, not Python's) loads an exported GGUF with
`--jinja` and renders hytron's chat template exactly as hytron does, thinking switches and tools included.

Runs where the binary exists: `.ci/llama-server` builds it from the pinned llama-cpp-python sdist into the wheel
cache (about 30 minutes on 2 shared cores), or LLAMA_SERVER names one; skipped elsewhere (CI does not build it)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from hytron.export.gguf_model import export_gguf
from hytron.tokenizer import Tokenizer
from tests.fixtures.foreign import WEATHER_TOOL
from tests.serve.conftest import wait_for_health

BINARY = Path(os.environ.get("LLAMA_SERVER", Path.home() / ".cache/hytron-wheels/llama-server-0.3.36/llama-server"))
pytestmark = pytest.mark.skipif(not BINARY.is_file(), reason=f"no llama-server at {BINARY} (.ci/llama-server)")
CHATS = [
    ([{"role": "user", "content": "What is 6 times 7?"}], {}),
    ([{"role": "user", "content": "What is 6 times 7? /no_think"}], {}),
    ([{"role": "system", "content": "Be brief. /no_think"}, {"role": "user", "content": "Why? /think"}], {}),
    ([{"role": "user", "content": "Hi"}], {"enable_thinking": False}),
    ([{"role": "user", "content": "What is 6 times 7?"}, {"role": "assistant", "content": "42"},
      {"role": "user", "content": "And the weather in Paris?"}], {"tools": [WEATHER_TOOL]}),
]


@pytest.fixture(scope="module")
def server(dense_dir, tmp_path_factory):
    pytest.importorskip("httpx")
    gguf = export_gguf(dense_dir, tmp_path_factory.mktemp("llama-server") / "m.gguf")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(BINARY), "-m", str(gguf), "--jinja", "--host", "127.0.0.1", "--port", str(port),
                             "-t", "1", "-c", "2048"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(proc, url, timeout=60)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize(("messages", "kwargs"), CHATS)
def test_llama_server_renders_the_chat_template_as_hytron_does(server, dense_dir, messages, kwargs):
    import httpx

    tools = kwargs.get("tools")
    template_kwargs = {k: v for k, v in kwargs.items() if k != "tools"}
    body = {"messages": messages, **({"tools": tools} if tools else {}),
            **({"chat_template_kwargs": template_kwargs} if template_kwargs else {})}
    r = httpx.post(server + "/apply-template", json=body, timeout=60)
    assert r.status_code == 200, r.text
    want = Tokenizer.load(dense_dir).render_text(messages, add_generation_prompt=True, tools=tools, **template_kwargs)
    assert r.json()["prompt"] == want
