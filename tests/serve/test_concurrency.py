"""Under load: 32 concurrent streaming clients all complete correctly; a disconnect stops its generation."""

import asyncio
import contextlib
import json
import time

import httpx
import pytest

from tests.serve.conftest import API_KEY

CHAT = "/v1/chat/completions"


def wait_idle(engine, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while (engine.num_active or engine.num_waiting) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not (engine.num_active or engine.num_waiting)


async def stream_chat(c: httpx.AsyncClient, i: int) -> dict:
    body = {"messages": [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}], "max_tokens": 12,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "thinking_token_budget": 4}
    content, reasoning, finish, usage, done = "", "", None, None, False
    async with c.stream("POST", CHAT, json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            j = json.loads(line[6:])
            assert "error" not in j, j
            usage = j.get("usage") or usage
            for ch in j["choices"]:
                content += ch["delta"].get("content") or ""
                reasoning += ch["delta"].get("reasoning") or ""
                finish = ch["finish_reason"] or finish
    return {"content": content, "reasoning": reasoning, "finish": finish, "usage": usage, "done": done}


def test_32_concurrent_streaming_clients(server, http):
    async def main():
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=120, limits=limits) as c:
            return await asyncio.gather(*(stream_chat(c, i) for i in range(32)))

    results = asyncio.run(main())
    assert all(r["done"] and r["finish"] in ("stop", "length") for r in results)
    # each equals the same request made alone (greedy), checked for a few
    for i in (0, 13, 31):
        alone = http.post(CHAT, json={"messages": [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}],
                                      "max_tokens": 12, "temperature": 0, "thinking_token_budget": 4}).json()
        msg = alone["choices"][0]["message"]
        assert (results[i]["content"], results[i]["reasoning"]) == (msg["content"], msg["reasoning"])
        assert results[i]["usage"]["completion_tokens"] == alone["usage"]["completion_tokens"]
    assert http.get("/health").status_code == 200
    assert wait_idle(server.engine)


@pytest.fixture
def slow_steps(server):
    """Each model call takes >= 10 ms, so a 250-token generation outlasts the client on any machine (on a quiet
    one a tiny model would otherwise finish before the client hangs up, and there would be nothing to cancel)."""
    handle = server.engine.model.register_forward_pre_hook(lambda module, args: time.sleep(0.01))
    yield
    handle.remove()


def test_client_disconnect_stops_generation(server, http, slow_steps):
    before = server.engine.stats["finished_cancelled"]
    body = {"messages": [{"role": "user", "content": "Talk for a long time."}], "max_tokens": 250,
            "ignore_eos": True, "stream": True}
    with http.stream("POST", CHAT, json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        deadline = time.monotonic() + 5  # the engine thread picks the request up asynchronously
        while server.engine.num_active + server.engine.num_waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert server.engine.num_active + server.engine.num_waiting == 1
    # the connection is closed: the engine drops the request within a step or so
    deadline = time.monotonic() + 10
    while server.engine.stats["finished_cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.engine.stats["finished_cancelled"] == before + 1
    assert wait_idle(server.engine)
    assert 'finished_reason="cancelled"' in http.get("/metrics").text


def test_non_streaming_disconnect_also_cancels(server, slow_steps):
    before = server.engine.stats["finished_cancelled"]
    body = {"messages": [{"role": "user", "content": "Go on."}], "max_tokens": 250, "ignore_eos": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=0.1) as c, \
            contextlib.suppress(httpx.TimeoutException):
        c.post(CHAT, json=body)
    deadline = time.monotonic() + 10
    while server.engine.stats["finished_cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.engine.stats["finished_cancelled"] == before + 1


def test_deltas_reach_the_event_loop_once_per_step_and_only_when_someone_reads_them(model_dir):
    """The engine-to-event-loop bridge: a streamed request gets its deltas while it still decodes; requests that
    wait for their whole answer wake the loop only at their end; every delta arrives, in order."""
    import asyncio

    from hytron.infer import SamplingParams
    from hytron.serve import Backend, ServeConfig

    backend = Backend.load(model_dir, ServeConfig(decode_mode="static", max_slots=8))
    params = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    ids = backend.tokenizer.encode("hello there")

    async def main():
        loop = asyncio.get_running_loop()
        wakes = []
        plain = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a, **kw: (wakes.append(1), plain(*a, **kw))[1]
        waiting = [backend.submit(ids, params) for _ in range(6)]
        results = await asyncio.gather(*(s.result() for s in waiting))
        assert [len(r.token_ids) for r in results] == [24] * 6
        assert len(wakes) <= 6  # at most one per finish (once per step: they finish together)
        wakes.clear()
        streamed = backend.submit(ids, params)
        seen = []
        async for delta in streamed:
            seen.append(delta)
            if len(seen) == 1:
                assert not streamed.request.done  # the first token arrives while the others decode
        assert len(wakes) >= 12  # about one per step
        assert [t for d in seen for t in d.token_ids] == results[0].token_ids

    try:
        asyncio.run(main())
    finally:
        backend.close()
