"""A real `hytron serve` process: slow or half-sent requests are cut off, and SIGTERM ends it within its deadline.

Before: a client that sent headers and part of a body held its connection forever, idle connections were
never closed, and a pending partial body kept the server from exiting on SIGTERM (still running 60 s later).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import wait_for_health

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # each test starts a `hytron serve` process and waits out a deadline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def hytron_serve(model_dir, *flags: str):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "hytron", "serve", str(model_dir), "--port", str(port),
                             "--threads", "1", *flags], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(proc, url, timeout=120)
        yield proc, port, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection (recv returns b"" or the connection resets)."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


PARTIAL_HEAD = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"
PARTIAL_BODY = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{\"prompt\": ")


def test_incomplete_requests_are_closed_after_the_read_timeout(model_dir):
    with hytron_serve(model_dir, "--read-timeout", "2") as (proc, port, url):
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]  # say nothing at all
        head, body = socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port))
        head.sendall(PARTIAL_HEAD)
        body.sendall(PARTIAL_BODY)
        try:
            assert closed_by_server(head, 30) and closed_by_server(body, 30)
            assert all(closed_by_server(s, 30) for s in socks)
        finally:
            for s in [head, body, *socks]:
                s.close()
        # a complete request on a fresh connection is served as always
        r = httpx.post(url + "/v1/completions", json={"prompt": "The river", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200
        assert proc.poll() is None


def test_sigterm_exits_within_the_shutdown_deadline(model_dir):
    # the read timeout is long, so only the shutdown deadline can end the half-sent request in time
    with hytron_serve(model_dir, "--read-timeout", "300", "--shutdown-timeout", "2") as (proc, port, url):
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(PARTIAL_BODY)
        streamed = threading.Event()

        def long_stream():
            req = {"prompt": "The river", "max_tokens": 1500, "ignore_eos": True, "stream": True}
            try:
                with httpx.stream("POST", url + "/v1/completions", json=req, timeout=120) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: {"):
                            json.loads(line[6:])
                            streamed.set()
            except httpx.HTTPError:
                pass  # the server went away mid-stream: expected

        t = threading.Thread(target=long_stream, daemon=True)
        t.start()
        assert streamed.wait(60)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("hytron serve still running 60 s after SIGTERM")
        finally:
            body.close()
        assert code in (0, -signal.SIGTERM), proc.stdout.read().decode()  # uvicorn re-raises the signal
        assert time.monotonic() - t0 < 60
        t.join(30)
