"""`hytron serve` with the prefix cache: a multi-turn chat, completions (n > 1, streamed) and the Responses API
answer as a server without it does, `usage.prompt_tokens_details.cached_tokens` says what was reused, /metrics
counts it; --prefix-cache-mb 0 turns it off and a negative budget is refused."""

import re

import httpx
import pytest

from hytron.cli.serve import _config
from hytron.serve import ServeConfig
from tests.serve.conftest import running_server

SYSTEM = ("You are a helpful assistant for questions about rivers, towns and the weather. Answer in one short "
          "sentence, and say so when you do not know. ") * 2
QUESTIONS = ["Tell me about the river.", "And the town beside it?", "What is the weather there?"]


def post(server, path: str, body: dict) -> dict:
    r = httpx.post(server.url + path, json={"model": server.backend.name, **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def chat_turns(server, system: str = SYSTEM, **extra) -> list[dict]:
    """Three turns of one conversation, each sending the whole history so far (as chat clients do)."""
    messages, out = [{"role": "system", "content": system}], []
    for q in QUESTIONS:
        messages.append({"role": "user", "content": q})
        r = post(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 12, "temperature": 0,
                                                   "logprobs": True, "top_logprobs": 3, **extra})
        messages.append({"role": "assistant", "content": r["choices"][0]["message"]["content"]})
        out.append(r)
    return out


def logprob_rows(r: dict) -> list[list[tuple[str, float]]]:
    return [[(t["token"], t["logprob"]) for t in c["top_logprobs"]] for c in r["choices"][0]["logprobs"]["content"]]


def output(resp: dict) -> list:
    """A Responses object's output items without their ids."""
    return [{k: v for k, v in item.items() if k != "id"} for item in resp["output"]]


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.fixture(scope="module")
def servers(model_dir):
    with running_server(model_dir, max_len=512, prefix_cache_block=16) as cached, \
            running_server(model_dir, max_len=512, prefix_cache_mb=0) as plain:
        yield cached, plain


def same_answers(got: list[dict], want: list[dict]) -> None:
    for g, w in zip(got, want):
        assert g["choices"][0]["message"] == w["choices"][0]["message"]
        for rg, rw in zip(logprob_rows(g), logprob_rows(w)):
            assert [t for t, _ in rg] == [t for t, _ in rw]
            assert max(abs(a - b) for (_, a), (_, b) in zip(rg, rw)) < 1e-4
        assert w["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_chat_turns_answer_the_same_and_report_cached_tokens(servers):
    cached, plain = servers
    scraped = httpx.get(cached.url + "/metrics").text
    want, got = chat_turns(plain), chat_turns(cached)
    same_answers(got, want)
    cached_tokens = [g["usage"]["prompt_tokens_details"]["cached_tokens"] for g in got]
    prompt_tokens = [g["usage"]["prompt_tokens"] for g in got]
    # turn 1 finds nothing; later turns reuse the history sent before: whole blocks, or all of the last prompt but
    # its last token where the new prompt continues it; never the new prompt's last token
    assert cached_tokens[0] == 0
    for c, p, before in zip(cached_tokens[1:], prompt_tokens[1:], prompt_tokens):
        assert (c % 16 == 0 or c == before - 1) and before - 16 < c < p
    text = httpx.get(cached.url + "/metrics").text

    def grew(name: str) -> float:
        return metric(text, name) - metric(scraped, name)

    assert grew("hytron_prefix_cache_hits_total") == sum(cached_tokens)
    assert grew("hytron_prefix_cache_queries_total") == sum(prompt_tokens)
    assert grew("hytron_prefix_cache_request_hits_total") == 2
    assert grew("hytron_prefix_cache_stored_total") > 0
    assert metric(text, "hytron_prefix_cache_bytes") == cached.engine.prefix_cache.bytes > 0
    assert 0 < metric(text, "hytron_prefix_cache_hit_rate") < 1
    assert metric(text, "hytron_prefix_cache_evictions_total") == 0
    assert "hytron_prefix_cache" not in httpx.get(plain.url + "/metrics").text


def test_without_thinking_a_turn_resumes_at_the_end_of_the_last_prompt(servers):
    cached, plain = servers
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    system = "Think of rivers first, then of towns, and answer the way a guide book would. " * 2
    want, got = chat_turns(plain, system, **off), chat_turns(cached, system, **off)
    same_answers(got, want)
    # the history renders as it was sent, so each prompt continues the last one: all of it is reused but its last
    # token (the state is kept there, so that the same prompt sent again resumes too), or all of it when it ends at
    # a block boundary (a block keeps the state after it). Not the answer: it comes back as text, tokenized anew,
    # and a random model's ids do not survive that round trip (the engine test checks that a turn continuing the
    # generated ids resumes after them)
    prompt_tokens = [g["usage"]["prompt_tokens"] for g in got]
    assert [g["usage"]["prompt_tokens_details"]["cached_tokens"] for g in got][1:] == [
        p if p % 16 == 0 else p - 1 for p in prompt_tokens[:-1]]  # all of it when it ends a block


def test_completions_n_and_streamed_usage_and_responses(servers):
    cached, plain = servers
    prompt = SYSTEM + " Which river is longest?"
    body = {"prompt": prompt, "max_tokens": 6, "temperature": 0, "n": 2, "logprobs": 2}
    want, got = post(plain, "/v1/completions", body), post(cached, "/v1/completions", body)
    assert [c["text"] for c in got["choices"]] == [c["text"] for c in want["choices"]]
    assert [c["logprobs"]["top_logprobs"][0].keys() for c in got["choices"]] == \
        [c["logprobs"]["top_logprobs"][0].keys() for c in want["choices"]]
    assert got["usage"]["prompt_tokens"] == want["usage"]["prompt_tokens"]
    # a prompt counts once, with its first choice's cached tokens: nothing (the second choice reused the first's)
    assert got["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    with httpx.stream("POST", cached.url + "/v1/completions", timeout=60,
                      json={"model": cached.backend.name, **body, "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: {")]
    usage = httpx.Response(200, content=lines[-1][6:]).json()["usage"]
    n = usage["prompt_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == n - 1  # the same prompt again: all but its last
    ask = {"instructions": SYSTEM, "input": "Which town is nearest?", "max_output_tokens": 6, "temperature": 0}
    first, again = post(cached, "/v1/responses", ask), post(cached, "/v1/responses", ask)
    assert output(first) == output(again) == output(post(plain, "/v1/responses", ask))
    assert again["usage"]["input_tokens_details"]["cached_tokens"] == again["usage"]["input_tokens"] - 1


def test_flags_and_bad_budgets():
    import argparse

    from hytron.cli.serve import add_serve

    parser = argparse.ArgumentParser()
    add_serve(parser.add_subparsers())
    args = parser.parse_args(["serve", "m", "--prefix-cache-mb", "0", "--prefix-cache-block", "64"])
    assert (_config(args).prefix_cache_mb, _config(args).prefix_cache_block) == (0, 64)
    assert _config(parser.parse_args(["serve", "m"])).prefix_cache_mb == ServeConfig().prefix_cache_mb > 0
    with pytest.raises(ValueError, match="prefix_cache_mb"):
        ServeConfig(prefix_cache_mb=-1)
    with pytest.raises(ValueError, match="prefix_cache_block"):
        ServeConfig(prefix_cache_block=0)
