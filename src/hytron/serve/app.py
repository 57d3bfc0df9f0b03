"""The OpenAI-compatible HTTP app: routes, API-key and body-size guard, tokenizer endpoints, metrics, chat page.

    app = create_app(Backend.load(model_dir, ServeConfig(api_key="sk-...")))
    hytron.serve.http.run(app, "127.0.0.1", 8000, read_timeout=30, shutdown_timeout=10)

The API key (when set) is required on every route except `/health` and the chat page itself, as
`Authorization: Bearer KEY` or `x-api-key: KEY` (compared in constant time). Every route checks the Host
header against the bound address (or `allowed_hosts`), POST bodies must be `application/json`, and CORS is off
unless `cors_origins` names the pages that may call the API.
"""

from __future__ import annotations

import functools
import hmac
import json
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from hytron.serve import errors, openai, responses
from hytron.serve.backend import Backend
from hytron.serve.errors import ERROR_RESPONSES, APIError, error_body
from hytron.serve.metrics import Metrics
from hytron.serve.page import CHAT_PAGE, PAGE_HEADERS
from hytron.serve.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    ResponseObject,
    ResponsesRequest,
    TextCompletion,
    TokenizeRequest,
    TokenizeResponse,
)

PUBLIC = {"/health", "/", "/favicon.ico"}
MAX_HEAD_BYTES = 16384  # request line and headers together (what serve/http.py documents)


def _ok(model, stream: bool = False) -> dict:
    """OpenAPI responses: the 200 body's schema (plus an SSE stream when `stream`), and every error."""
    event = {"type": "object", "required": ["data"], "properties": {  # one SSE event: JSON chunk, or [DONE]
        "data": {"type": "string", "description": "a JSON chunk object, or [DONE] at the end"}}}
    content = {"text/event-stream": {"schema": event}} if stream else {}
    return {**ERROR_RESPONSES, 200: {"model": model, "content": content,
                                     "description": "the result" + (", or an SSE stream with stream=true"
                                                                    if stream else "")}}


class Guard:
    """ASGI middleware, before any route: Host allow-list, API key on every non-public route, JSON bodies only
    (415 otherwise), request body capped at `max_body` bytes (413).

    Without the Host and content-type checks any web page could drive a keyless server: a "simple" cross-site
    POST (text/plain, no preflight) ran generation, and DNS rebinding (evil.example resolving to 127.0.0.1)
    could read the replies.
    """

    def __init__(self, app, api_key: str | None, max_body: int, metrics: Metrics, allowed_hosts: set[str]):
        self.app, self.api_key, self.max_body, self.metrics = app, api_key, max_body, metrics
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.http.labels(str(message["status"])).inc()
            await send(message)

        raw_headers = scope.get("headers") or []
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + sum(
            len(k) + len(v) + 4 for k, v in raw_headers)
        if head > MAX_HEAD_BYTES:  # h11 caps only a head still arriving; one sent whole got through
            return await self._reject(counting_send, 431, f"request headers larger than {MAX_HEAD_BYTES} bytes",
                                      {"connection": "close"})
        headers = dict(raw_headers)
        if b"transfer-encoding" in headers and b"content-length" in headers:
            # RFC 9112 6.1: a proxy in front may have framed the body by Content-Length and this server by the
            # chunks (request smuggling): refuse, and close the connection so nothing after it is read
            return await self._reject(counting_send, 400, "a request must not carry both Content-Length and "
                                                          "Transfer-Encoding", {"connection": "close"})
        host = headers.get(b"host", b"").decode("latin-1")
        if not _host_allowed(host, self.allowed_hosts):
            return await self._reject(counting_send, 400, f"Host {host[:100]!r} is not served here (allowed: "
                                                          f"{', '.join(sorted(self.allowed_hosts))}; see "
                                                          "--allowed-host)")
        if self.api_key and scope["path"] not in PUBLIC and not self._authorized(scope):
            return await self._reject(counting_send, 401, "invalid or missing API key (send Authorization: Bearer "
                                                          "KEY)", {"www-authenticate": "Bearer"})
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await self._reject(counting_send, 413, f"request body larger than {self.max_body} bytes")
        if scope["method"] in ("POST", "PUT", "PATCH"):
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media != b"application/json":
                got = media.decode("latin-1")[:60]
                return await self._reject(counting_send, 415, "send the request body as JSON with Content-Type: "
                                                              f"application/json (got {got!r})")
            body, more = [], True
            size = 0
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    return await self._reject(counting_send, 413, f"request body larger than {self.max_body} bytes")
                body.append(chunk)
                more = message.get("more_body", False)
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(body), "more_body": False}
                return await receive()

            return await self.app(scope, replay, counting_send)
        return await self.app(scope, receive, counting_send)

    def _authorized(self, scope) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key", b"")
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return hmac.compare_digest(given, self.api_key.encode())

    @staticmethod
    async def _reject(send, status: int, message: str, headers: dict | None = None):
        body = json.dumps(error_body(status, message)).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def create_app(backend: Backend) -> FastAPI:
    """The FastAPI app serving `backend`; the engine thread starts with the app and stops with it."""
    cfg = backend.config
    metrics = Metrics(backend)
    backend.observers.append(metrics.observe)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend.start()
        yield
        backend.close()

    app = FastAPI(title="hytron", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="OpenAI-compatible API (vLLM dialect) for a hytron hybrid model.")
    errors.install(app)
    app.state.backend, app.state.metrics = backend, metrics

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(CHAT_PAGE, headers=PAGE_HEADERS)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(status_code=204)  # browsers ask for it; the page has no icon

    @app.get("/health")
    async def health():
        if not backend.engine.healthy:
            raise APIError(503, "the engine is not running")
        return {"status": "ok"}

    @app.get("/v1/models", responses=_ok(ModelList))
    async def models():
        return {"object": "list", "data": [_card(backend)]}

    @app.get("/v1/models/{model_id}", responses=_ok(ModelCard))
    async def model(model_id: str):
        openai.check_model(backend, model_id)
        return _card(backend)

    @app.post("/v1/chat/completions", responses=_ok(ChatCompletion, stream=True))
    async def chat(body: ChatCompletionRequest, request: Request):
        return await openai.chat_completions(backend, body, request)

    @app.post("/v1/completions", responses=_ok(TextCompletion, stream=True))
    async def complete(body: CompletionRequest, request: Request):
        return await openai.completions(backend, body, request)

    @app.post("/v1/responses", responses=_ok(ResponseObject, stream=True))
    async def respond(body: ResponsesRequest, request: Request):
        return await responses.responses(backend, body, request)

    @app.post("/tokenize", responses=_ok(TokenizeResponse))
    async def tokenize(body: TokenizeRequest, request: Request):
        openai.check_model(backend, body.model)
        if (body.prompt is None) == (body.messages is None):
            raise APIError(400, "give exactly one of prompt or messages", "prompt")

        def answer(ids: list[int]) -> bytes:
            out = {"count": len(ids), "max_model_len": backend.max_len, "tokens": ids}
            if body.return_token_strs:
                out["token_strs"] = [backend.token_strs[i] for i in ids]
            return json.dumps(out, ensure_ascii=False).encode()

        if body.messages is not None:  # a chat template render: on the template threads, like a chat request
            ids = await backend.render(functools.partial(openai.tokenize_chat, backend, body), request)
            return Response(await run_in_threadpool(answer, ids), media_type="application/json")

        def run() -> bytes:  # in a worker thread: a 4 MB prompt takes seconds to tokenize and to serialize
            return answer(backend.encode(body.prompt, add_special_tokens=body.add_special_tokens))

        return Response(await run_in_threadpool(run), media_type="application/json")

    @app.post("/detokenize", responses=_ok(DetokenizeResponse))
    async def detokenize(body: DetokenizeRequest):
        openai.check_model(backend, body.model)

        def run() -> bytes:
            backend.check_ids(body.tokens, "tokens")
            return json.dumps({"prompt": backend.tokenizer.decode(body.tokens)}, ensure_ascii=False).encode()

        return Response(await run_in_threadpool(run), media_type="application/json")

    @app.get("/tokenizer_info", responses=ERROR_RESPONSES)
    async def tokenizer_info():
        tok = backend.tokenizer
        return {"tokenizer_class": "PreTrainedTokenizerFast", **tok.special_tokens_map,
                "eos_token_id": tok.eos_id, "bos_token_id": tok.bos_id, "pad_token_id": tok.pad_id,
                "stop_token_ids": list(tok.stop_ids), "chat_template": tok.chat_template,
                "model_max_length": backend.max_len, "vocab_size": tok.vocab_size,
                "add_bos_token": bool(tok.post_processor_prefix),
                "add_eos_token": False}

    @app.get("/metrics", responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"}})
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/version")
    async def version():
        from hytron import __version__

        return {"version": __version__}

    app.add_middleware(Guard, api_key=cfg.api_key, max_body=cfg.max_body_bytes, metrics=metrics,
                       allowed_hosts=allowed_hosts(cfg))
    if cfg.cors_origins:  # off by default: no browser page from another origin may call the API
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-API-Key"], max_age=600)
    return app


def allowed_hosts(cfg) -> set[str]:
    """Host names the server answers to: the configured list, else the bound address's names (any for 0.0.0.0)."""
    if cfg.allowed_hosts:
        return {h.lower() for h in cfg.allowed_hosts}
    if cfg.host in ("0.0.0.0", "::", ""):
        return {"*"}  # every interface: the names are unknown here; --allowed-host narrows it
    local = {"localhost", "127.0.0.1", "::1"}
    return {cfg.host.lower()} | (local if cfg.host.lower() in local or cfg.host.startswith("127.") else set())


def _host_allowed(host: str, allowed: set[str]) -> bool:
    """Host header (`name`, `name:port`, `[v6]:port`) against names and `*.domain` patterns, as starlette's
    TrustedHostMiddleware matches them."""
    if "*" in allowed:
        return True
    host = host.lower()
    if host.startswith("[") and "]" in host:
        name = host[1:host.index("]")]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return bool(name) and any(name == a or (a.startswith("*.") and name.endswith(a[1:])) for a in allowed)


def _card(backend: Backend) -> dict:
    return {"id": backend.name, "object": "model", "created": backend.created, "owned_by": "hytron",
            "root": backend.name, "parent": None, "max_model_len": backend.max_len}
