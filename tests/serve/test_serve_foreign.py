"""`hytron serve` on checkpoints written by transformers: their template, stop ids, thinking and BOS conventions."""

import json

import pytest

from tests.fixtures.foreign import WEATHER_TOOL
from tests.serve.conftest import running_server

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

CHATS = [
    [{"role": "user", "content": "What is 6 times 7?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is 6 times 7?"},
     {"role": "assistant", "content": "42", "reasoning_content": "Six sevens."},
     {"role": "user", "content": "And the weather in Paris? /no_think"}],
]


@pytest.fixture(scope="module", params=["nemotron3", "nano2", "plain", "super"])
def served(request, foreign):
    d = foreign(request.param)
    with running_server(d, max_len=512, max_tokens_limit=64) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        yield request.param, d, s, c


@pytest.fixture(scope="module")
def hf_tok(served):
    return transformers.AutoTokenizer.from_pretrained(str(served[1]))


@pytest.mark.parametrize("chat", [0, 1])
@pytest.mark.parametrize("kwargs", [{}, {"enable_thinking": True}, {"enable_thinking": False}])
@pytest.mark.parametrize("tools", [None, [WEATHER_TOOL]])
def test_tokenize_messages_and_prompt_tokens_equal_transformers(served, hf_tok, chat, kwargs, tools):
    name, _, _, http = served
    body = {"messages": CHATS[chat], "chat_template_kwargs": kwargs, **({"tools": tools} if tools else {})}
    r = http.post("/tokenize", json=body)
    if name == "plain":  # no chat template: chat requests are a clear 400, completions still work
        assert r.status_code == 400 and "no chat template" in r.json()["error"]["message"]
        return
    want = hf_tok.apply_chat_template(CHATS[chat], tools=tools, add_generation_prompt=True, tokenize=True,
                                      return_dict=False, **kwargs)
    assert r.status_code == 200 and r.json()["tokens"] == want
    chat_r = http.post("/v1/chat/completions", json={**body, "max_tokens": 2, "temperature": 0}).json()
    assert chat_r["usage"]["prompt_tokens"] == len(want)


def test_greedy_completion_equals_transformers_generate(served, hf_tok):
    _, d, _, http = served
    prompt = "The river Alder rises on"
    model = transformers.AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
    ids = hf_tok(prompt, return_tensors="pt")["input_ids"]
    stop = model.generation_config.eos_token_id
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=stop,
                             pad_token_id=hf_tok.pad_token_id or 0)
    want = hf_tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    r = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 24, "temperature": 0}).json()
    assert r["choices"][0]["text"] == want
    assert r["usage"]["prompt_tokens"] == ids.shape[1]  # BOS added as the post-processor says (nano2)


def test_reasoning_split_and_budget(served):
    name, _, s, http = served
    if name == "plain":
        pytest.skip("no chat template")
    budget, grace = 6, 1  # grace: 10% of the budget, rounded up
    msgs = [{"role": "user", "content": "What is 6 times 7?"}]
    r = http.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 40, "temperature": 0,
                                                "max_thinking_tokens": budget}).json()
    msg, usage = r["choices"][0]["message"], r["usage"]
    assert msg["reasoning_content"] is not None
    # + a forced newline when the grace window ran out mid-line, + the forced </think>
    assert usage["completion_tokens_details"]["reasoning_tokens"] <= budget + grace + 2
    assert msg["reasoning_content"].endswith("\n")  # a cut trace ends on a line break
    assert "</think>" not in (msg["content"] or "") and "<think>" not in msg["reasoning_content"]
    # thinking off: no reasoning, everything is content
    off = http.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 8, "temperature": 0,
                                                  "chat_template_kwargs": {"enable_thinking": False}}).json()
    assert off["choices"][0]["message"].get("reasoning_content") is None
    assert off["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    # streaming gives the same split
    with http.stream("POST", "/v1/chat/completions", json={"messages": msgs, "max_tokens": 40, "temperature": 0,
                                                           "max_thinking_tokens": budget, "stream": True}) as st:
        import json

        chunks = [json.loads(line[6:]) for line in st.iter_lines() if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == msg["reasoning_content"]
    assert "".join(d.get("content") or "" for d in deltas) == (msg["content"] or "")


def test_tokenizer_info_reports_the_checkpoints_tokens(served):
    name, _, s, http = served
    info = http.get("/tokenizer_info").json()
    assert info["stop_token_ids"] == list(s.backend.tokenizer.stop_ids)
    if name == "nemotron3":
        assert info["stop_token_ids"] == [2, 11] and info["eos_token"] == "</s>"


def test_tool_choice_checks_and_grammar(served, hf_tok):
    """A forced call on the template's own format: the random model's answer is a valid call of the tool."""
    name, _, s, http = served
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    base = {"messages": msgs, "tools": [WEATHER_TOOL], "max_tokens": 64, "temperature": 1.0, "seed": 3,
            "chat_template_kwargs": {"enable_thinking": False}}
    r = http.post("/v1/chat/completions", json={**base, "tool_choice": {"type": "function",
                                                                        "function": {"name": "nope"}}})
    if name == "plain":
        assert r.status_code == 400
        return
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
    r = http.post("/v1/chat/completions", json={**base, "tool_choice": "required"})
    assert r.status_code == 200, r.text
    r = r.json()
    want = hf_tok.apply_chat_template(msgs, tools=[WEATHER_TOOL], add_generation_prompt=True, enable_thinking=False,
                                      tokenize=True, return_dict=False)
    assert r["usage"]["prompt_tokens"] == len(want)  # nothing prefilled: the grammar shapes the answer
    choice = r["choices"][0]
    if choice["finish_reason"] == "length":  # the server's max_tokens (64) cut the call: it began as forced
        opening = {"xml": "<tool_call>\n<function=get_weather>\n", "json": '<TOOLCALL>[{"name": "get_weather"'}
        assert choice["message"]["content"].startswith(opening[s.backend.tool_parser.name]), choice
        return
    assert choice["finish_reason"] == "tool_calls", choice
    [call] = choice["message"]["tool_calls"]
    args = json.loads(call["function"]["arguments"])
    assert call["function"]["name"] == "get_weather" and isinstance(args, dict)
    assert set(args) <= set(WEATHER_TOOL["function"]["parameters"]["properties"])


@pytest.mark.parametrize("key", ["messages", "tools", "add_generation_prompt", "_spans"])
def test_template_kwargs_cannot_replace_what_the_request_sets(served, key):
    _, _, _, http = served
    r = http.post("/v1/chat/completions", json={"messages": CHATS[0], "max_tokens": 2,
                                                "chat_template_kwargs": {key: []}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "chat_template_kwargs"


def test_input_the_template_cannot_render_is_400(served):
    name, _, _, http = served
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": ["string", "null"]}}}}}  # valid JSON schema, odd for templates
    r = http.post("/v1/chat/completions", json={"messages": CHATS[0], "tools": [tool], "max_tokens": 2})
    assert r.status_code in (200, 400)  # rendered, or refused with a message; never a 500
    if r.status_code == 400:
        assert "chat template" in r.json()["error"]["message"] or name == "plain"
