"""Serve fixtures: a tiny chat model directory and real uvicorn servers on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest

from hytron.serve import Backend, ServeConfig, create_app
from tests.fixtures.threads import package_one_thread  # noqa: F401 - autouse: one torch thread
from tests.infer.chatmodel import save_chat_model

API_KEY = "test-key-123"


def wait_for_health(proc, url: str, timeout: float = 90) -> None:
    """Wait until a `hytron serve` subprocess answers GET /health with 200; fail with its output if it exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            outputs = [s.read() for s in (proc.stdout, proc.stderr) if s is not None]
            out = "".join(o if isinstance(o, str) else o.decode(errors="replace") for o in outputs if o)
            raise AssertionError(f"hytron serve exited with {proc.returncode}: {out}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "hytron serve did not come up"
        time.sleep(0.2)




@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return save_chat_model(tmp_path_factory.mktemp("chat-model") / "tiny-chat")


class RunningServer:
    def __init__(self, backend: Backend, app, server, thread):
        self.backend, self.app, self.server, self.thread = backend, app, server, thread
        self.port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def engine(self):
        return self.backend.engine


@contextmanager
def running_server(model_dir, **config):
    """Start uvicorn in a thread (port 0 = ephemeral), yield it, and always stop it. The decode step is not
    compiled unless asked for (`decode_mode`): these servers test the API, and compiling takes 10-90 s here."""
    import uvicorn

    from hytron.serve import http

    backend = Backend.load(model_dir, ServeConfig(**{"decode_mode": "static", **config}))
    app = create_app(backend)
    cfg = backend.config
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           **http.options(cfg.read_timeout, cfg.shutdown_timeout,
                                                          cfg.max_connections)))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(backend, app, server, thread)
    finally:
        server.should_exit = True
        thread.join(30)
        backend.close()


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(model_dir, api_key=API_KEY, max_slots=8, max_waiting=64, max_len=512,
                        max_tokens_limit=256, max_body_bytes=64 * 1024) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture
def http(server):
    import httpx

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c
