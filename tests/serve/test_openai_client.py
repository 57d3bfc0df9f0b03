"""The official `openai` client against a real server: models, chat (plain, streaming, reasoning), completions."""

import pytest

from hytron.infer import SamplingParams, generate

openai = pytest.importorskip("openai")


def expected(server, messages, max_tokens, thinking=None, budget=None, enable_thinking=None):
    """What the engine generates greedily for this chat, computed without HTTP."""
    b = server.backend
    ids, opens = b.chat_prompt(messages, enable_thinking)
    params = SamplingParams(max_tokens=max_tokens, temperature=0, thinking=opens,
                            max_thinking_tokens=budget if opens else None)
    e = b.engine
    return generate(b.model, [ids], params, stop_ids=e.stop_ids, decode=b.decode, think_start_id=e.think_start_id,
                    think_end_id=e.think_end_id, newline_ids=e.newline_ids, line_end_id=e.line_end_id)[0], len(ids)


def test_models_lists_the_served_model(client, server):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny-chat"]
    assert models[0].model_extra["max_model_len"] == 512
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"


def test_chat_returns_reasoning_apart_from_the_answer(client, server):
    messages = [{"role": "user", "content": "What is 6 times 7?"}]
    r = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=24, temperature=0,
                                       extra_body={"thinking_token_budget": 6})
    want, n_prompt = expected(server, messages, 24, budget=6)
    msg = r.choices[0].message
    assert msg.content == want.text
    assert msg.model_extra["reasoning"] == want.reasoning == msg.model_extra["reasoning_content"]
    assert r.choices[0].finish_reason == want.finish_reason
    assert r.usage.prompt_tokens == n_prompt and r.usage.completion_tokens == len(want.token_ids)
    assert r.usage.completion_tokens_details.reasoning_tokens == want.reasoning_tokens
    assert 6 < want.reasoning_tokens <= 6 + 1 + 1 + 1  # budget + grace (10% -> 1) + a forced "\n" + </think>
    assert r.object == "chat.completion" and r.model == "tiny-chat"


def test_no_think_gives_empty_reasoning(client, server):
    for kw in ({"messages": [{"role": "user", "content": "Hello /no_think"}]},
               {"messages": [{"role": "user", "content": "Hello"}],
                "extra_body": {"chat_template_kwargs": {"enable_thinking": False}}},
               {"messages": [{"role": "user", "content": "Hello"}], "extra_body": {"reasoning_effort": "none"}}):
        r = client.chat.completions.create(model="tiny-chat", max_tokens=8, temperature=0, **kw)
        assert not r.choices[0].message.model_extra.get("reasoning")
        assert r.usage.completion_tokens_details.reasoning_tokens == 0
        assert r.choices[0].message.content == expected(server, kw["messages"], 8, enable_thinking=False)[0].text


def test_chat_streaming_matches_the_plain_answer(client, server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river."}]
    kw = dict(model="tiny-chat", messages=messages, max_tokens=20, temperature=0,
              extra_body={"thinking_token_budget": 4})
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content
    assert reasoning == plain.choices[0].message.model_extra["reasoning"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_seeded_sampling_and_n_choices(client):
    kw = dict(model="tiny-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=10, temperature=1.0,
              seed=42, n=3, extra_body={"reasoning_effort": "none"})
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert len({c.message.content for c in a.choices}) > 1  # choice i samples with seed + i


def test_chat_logprobs(client):
    r = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hi /no_think"}],
                                       max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    lps = r.choices[0].logprobs.content
    assert len(lps) == r.usage.completion_tokens
    for lp in lps:
        assert len(lp.top_logprobs) == 3 and lp.top_logprobs[0].logprob == pytest.approx(lp.logprob)


def test_completions_plain_stop_and_stream(client, server):
    r = client.completions.create(model="tiny-chat", prompt="The river Alder", max_tokens=12, temperature=0)
    text = r.choices[0].text
    ids = server.backend.encode("The river Alder")
    want = generate(server.backend.model, [ids], SamplingParams(max_tokens=12, temperature=0),
                    stop_ids=server.engine.stop_ids, decode=server.backend.decode)[0]
    assert text == want.text and r.usage.prompt_tokens == len(ids)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-chat", prompt="The river Alder", max_tokens=12, temperature=0, stream=True) if c.choices)
    assert streamed == text
    if len(text) > 4:
        stop = text[2:4]
        cut = client.completions.create(model="tiny-chat", prompt="The river Alder", max_tokens=12, temperature=0,
                                        stop=[stop])
        assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_completions_echo_logprobs_for_loglikelihood(client, server):
    import torch

    prompt = [[5, 40, 41, 42, 43], [7, 50, 51]]
    r = client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=1, temperature=0, echo=True,
                                  logprobs=1)
    assert len(r.choices) == 2
    for ids, choice in zip(prompt, sorted(r.choices, key=lambda c: c.index)):
        lp = choice.logprobs
        assert len(lp.tokens) == len(ids) + 1 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        with torch.no_grad():
            full = torch.log_softmax(server.backend.model(torch.tensor([ids]))[0].float(), -1)
        want = [float(full[j, ids[j + 1]]) for j in range(len(ids) - 1)]
        assert lp.token_logprobs[1:len(ids)] == pytest.approx(want, abs=1e-4)
        assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
        assert choice.text.startswith(server.backend.decode(ids))


def test_streaming_n_choices_and_completion_logprobs(client):
    kw = dict(model="tiny-chat", messages=[{"role": "user", "content": "Hi /no_think"}], max_tokens=6,
              temperature=1.0, seed=5, n=2)
    plain = client.chat.completions.create(**kw)
    texts = {0: "", 1: ""}
    finished = set()
    for c in client.chat.completions.create(stream=True, **kw):
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1}
    assert [texts[i] for i in (0, 1)] == [c.message.content for c in plain.choices]
    streamed = list(client.completions.create(model="tiny-chat", prompt="The fox", max_tokens=5, temperature=0,
                                              logprobs=2, stream=True))
    lps = [lp for c in streamed if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.token_logprobs]
    whole = client.completions.create(model="tiny-chat", prompt="The fox", max_tokens=5, temperature=0, logprobs=2)
    assert lps == pytest.approx(whole.choices[0].logprobs.token_logprobs, abs=1e-5)
    assert all(1 <= len(t) <= 2 for t in whole.choices[0].logprobs.top_logprobs)  # same-text ids share a key
