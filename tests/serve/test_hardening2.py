"""Requests that cost more than they look, and HTTP edge cases (issue 26, items 1-4, 7, 9, 11), over real servers.

Before: long stop strings were accepted without bound; a template that loops on a trigger word held every
worker thread (`/health` took 19 s) and SIGTERM did not stop the process; deep JSON in `tools`,
`chat_template_kwargs` or `tool_calls[].arguments` and `chat_template_kwargs: {"self": 1}` were 500s; a
request with both Content-Length and Transfer-Encoding was read as chunked and the connection kept; 100 KB
headers were accepted; `logit_bias` was silently ignored; the chat page sent no security headers.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from hytron.tokenizer.template import CHAT_TEMPLATE
from tests.serve.conftest import API_KEY, running_server, wait_for_health

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
TRIGGERED = "{% if 'boom' in messages[-1]['content'] %}" + LOOP + "{% endif %}" + CHAT_TEMPLATE


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


def with_template(model_dir: Path, dest: Path, template: str) -> Path:
    """A copy of the tiny model whose tokenizer carries `template`."""
    shutil.copytree(model_dir, dest)
    config_file = dest / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "chat_template": template}))
    return dest


def nested(depth: int, leaf=1):
    for _ in range(depth):
        leaf = {"a": leaf}
    return leaf


# ---- 1. stop strings: a cap on their total size ------------------------------------------------------------
def test_stop_strings_over_the_byte_cap_are_400(http):
    err = error_of(http.post(CHAT, json={"messages": HI, "stop": ["x" * 5000] * 8}), 400)
    assert err["param"] == "stop" and "bytes" in err["message"]
    assert http.post(CHAT, json={"messages": HI, "stop": ["x" * 100] * 8, "max_tokens": 2}).status_code == 200


# ---- 4. nesting depth of every free-form field ----------------------------------------------------------------
@pytest.mark.parametrize("body, param", [
    ({"messages": HI, "tools": [{"type": "function", "function": {"name": "f", "parameters": nested(400)}}]},
     "tools.0.function.parameters"),
    ({"messages": HI, "chat_template_kwargs": {"x": nested(500)}}, "chat_template_kwargs.x"),
    ({"messages": [{"role": "user", "content": "hi"},
                   {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                       "name": "f", "arguments": "[" * 900 + "]" * 900}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "ok"}]},
     "messages.1.tool_calls.0.function.arguments"),
])
def test_deep_json_is_400_naming_the_field(http, body, param):
    err = error_of(http.post(CHAT, json={**body, "max_tokens": 2}), 400)
    assert err["param"].startswith(param) and "deep" in err["message"], err
    assert "500" not in http.get("/metrics").text.split('hytron_http_requests_total{status="')[-1][:3]


def test_template_kwarg_named_self_is_400_naming_it(http):
    """Jinja's `self` is the template itself: a variable of that name could never be read (it was a 500)."""
    for path, body in [(CHAT, {"messages": HI, "max_tokens": 2}), ("/tokenize", {"messages": HI})]:
        err = error_of(http.post(path, json={**body, "chat_template_kwargs": {"self": 1}}), 400)
        assert err["param"] == "chat_template_kwargs" and "'self'" in err["message"]


# ---- 9. Content-Length with Transfer-Encoding: 400 and close (RFC 9112 6.1) -----------------------------------
def raw_exchange(port: int, request: bytes, wait: float = 10) -> tuple[bytes, bool]:
    """Send raw bytes; (what came back, whether the server closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(request)
        data, closed = b"", False
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except (TimeoutError, ConnectionResetError) as e:
            closed = isinstance(e, ConnectionResetError)
        return data, closed


def test_content_length_with_transfer_encoding_is_400_and_closed(server):
    body = b'{"prompt": "hi", "max_tokens": 1}'
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    smuggled = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + API_KEY.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunked)
    data, closed = raw_exchange(server.port, smuggled, wait=5)
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert b"Transfer-Encoding" in data and closed


# ---- 11. headers over 16 KiB, logit_bias, the chat page's security headers ------------------------------------
def test_headers_over_16_kib_are_refused(server):
    r = httpx.get(server.url + "/health", headers={"X-Pad": "a" * 100_000}, timeout=10)
    assert r.status_code == 431 and "16384" in r.text
    assert httpx.get(server.url + "/health", headers={"X-Pad": "a" * 8000}, timeout=10).status_code == 200


def test_logit_bias_is_applied_and_validated(http, server):
    base = {"prompt": "The river", "max_tokens": 6, "temperature": 0}
    plain = http.post("/v1/completions", json={**base, "logprobs": 0}).json()["choices"][0]
    ids = http.post("/tokenize", json={"prompt": "Alder", "add_special_tokens": False}).json()["tokens"]
    forced = http.post("/v1/completions", json={**base, "logit_bias": {str(ids[0]): 100}}).json()["choices"][0]
    assert forced["text"] == server.backend.tokenizer.decode(ids[:1]) * 6  # +100 makes it the argmax every step
    first = plain["logprobs"]["tokens"][0]  # -100 on every id spelled like the first token: another comes first
    strs = server.backend.token_strs
    bias = {str(i): -100 for i, t in enumerate(strs) if t == first}
    banned = http.post("/v1/completions", json={**base, "logit_bias": bias, "logprobs": 0}).json()["choices"][0]
    assert banned["logprobs"]["tokens"][0] != first
    vocab = server.backend.tokenizer.vocab_size
    for bias, param in [({str(vocab): 1}, "logit_bias"), ({"-1": 1}, "logit_bias"), ({"abc": 1}, "logit_bias"),
                        ({"5": 101}, "logit_bias.5"), ({"5": "1"}, "logit_bias.5")]:
        err = error_of(http.post(CHAT, json={"messages": HI, "logit_bias": bias}), 400)
        assert err["param"].startswith(param), (bias, err)


def test_chat_page_sends_security_headers(server):
    r = httpx.get(server.url + "/", timeout=10)
    assert r.status_code == 200
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp


# ---- 2. a hostile template: its requests fail alone, /health keeps answering ------------------------------------
def test_hostile_template_requests_fail_alone_and_health_stays_fast(model_dir, tmp_path):
    hostile = with_template(model_dir, tmp_path / "hostile", TRIGGERED)
    with running_server(hostile, max_len=512) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        results = []

        def boom():
            results.append(httpx.post(s.url + CHAT, json={"messages": [{"role": "user", "content": "boom"}],
                                                         "max_tokens": 2}, timeout=60))

        threads = [threading.Thread(target=boom) for _ in range(12)]
        for t in threads:
            t.start()
        slowest = 0.0
        while any(t.is_alive() for t in threads):
            t0 = time.monotonic()
            assert c.get("/health").status_code == 200
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.05)
        for t in threads:
            t.join()
        assert slowest < 1.0, f"/health took {slowest:.2f}s"
        assert all(r.status_code == 400 and "chat template" in r.json()["error"]["message"] for r in results)
        assert c.post(CHAT, json={"messages": HI, "max_tokens": 2}).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hytron(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "hytron", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


# ---- 3. a template over its budget at load: one line, exit 2 ----------------------------------------------------
@pytest.mark.parametrize("verb", ["serve", "chat", "export"])
def test_template_over_budget_is_refused_at_load(model_dir, tmp_path, verb):
    hostile = with_template(model_dir, tmp_path / "hanging", LOOP)
    args = {"serve": ["serve", str(hostile), "--port", str(free_port())], "chat": ["chat", str(hostile)],
            "export": ["export", "gguf", str(hostile), "--out", str(tmp_path / "m.gguf")]}[verb]
    proc = hytron(*args, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"hytron {verb} still loading a hanging template after 60 s")
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "chat template" in lines[0] and "steps" in lines[0], err


# ---- 2 (acceptance): /health under 1 s and SIGTERM within the shutdown timeout, while hostile requests run ----
def test_hostile_template_server_stays_healthy_and_stops_on_sigterm(model_dir, tmp_path):
    hostile = with_template(model_dir, tmp_path / "hostile", TRIGGERED)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = hytron("serve", str(hostile), "--port", str(port), "--threads", "1", "--shutdown-timeout", "2")
    stop = threading.Event()
    try:
        wait_for_health(proc, url)

        def hammer():
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(url + CHAT, json={"messages": [{"role": "user", "content": "boom"}]}, timeout=30)

        workers = [threading.Thread(target=hammer, daemon=True) for _ in range(16)]
        for w in workers:
            w.start()
        time.sleep(1)
        slowest = 0.0
        for _ in range(10):
            t0 = time.monotonic()
            assert httpx.get(url + "/health", timeout=30).status_code == 200
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("hytron serve still running 30 s after SIGTERM")
        assert time.monotonic() - t0 < 2 + 5  # the shutdown timeout, plus one render's budget to notice
        assert slowest < 1.0, f"/health took {slowest:.2f}s under hostile requests"
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


# ---- 7. a cap on connections below the open-file limit --------------------------------------------------------
def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection (after a 503 or without a word) within `seconds`."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_idle_connections_over_the_cap_make_room_and_health_stays_reachable(model_dir):
    with running_server(model_dir, max_connections=8, read_timeout=300) as s:
        idle = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(30)]  # say nothing
        try:
            time.sleep(0.5)
            with httpx.Client(timeout=5) as c:
                t0 = time.monotonic()
                assert c.get(s.url + "/health").status_code == 200
                assert time.monotonic() - t0 < 1.0
            closed = sum(closed_within(c, 0.2) for c in idle)
            assert closed >= 30 - 8, f"only {closed} of 30 idle connections were closed with a cap of 8"
        finally:
            for c in idle:
                c.close()


def test_serve_reports_the_open_file_limit_and_survives_running_out(model_dir):
    import resource

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = hytron("serve", str(model_dir), "--port", str(port), "--threads", "1", "--read-timeout", "300",
                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
    socks = []
    try:
        wait_for_health(proc, url)
        for _ in range(400):  # more than the process has descriptors for
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(1)
        with httpx.Client(timeout=5) as c:  # made before the clock starts: building its SSL context is slow
            t0 = time.monotonic()
            assert c.get(url + "/health").status_code == 200
            assert time.monotonic() - t0 < 1.0
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert "open-file limit 256" in out and "max connections" in out, out
    assert len(err.splitlines()) < 20 and "Traceback" not in err, err[-2000:]


def test_max_connections_above_the_open_file_limit_is_refused(model_dir):
    import resource

    proc = hytron("serve", str(model_dir), "--port", str(free_port()), "--max-connections", "5000",
                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1 and "--max-connections" in err, err
