"""The openai SDK drives a tool-calling round trip against `hytron serve` on a transformers-written checkpoint
that `hytron sft` taught to call a tool: request with tools -> tool_calls -> tool message -> final answer."""

import json

import pytest

from hytron.cli import main
from tests.fixtures.foreign import WEATHER_TOOL
from tests.serve.conftest import running_server

openai = pytest.importorskip("openai")

RECIPE = "sft-tiny"  # the packaged recipe, by name
QUESTIONS = ["What is the weather in Paris?", "Weather in Paris today?"]
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}


def _rows() -> list[dict]:
    rows = []
    for q in QUESTIONS:
        call = [{"role": "user", "content": q}, {"role": "assistant", "content": None, "tool_calls": [CALL]}]
        rows.append({"tools": [WEATHER_TOOL], "reasoning": "off", "messages": call})
        answer = [{"role": "tool", "content": "sunny, 21 degrees"},
                  {"role": "assistant", "content": "It is sunny in Paris."}]
        rows.append({"tools": [WEATHER_TOOL], "reasoning": "off", "messages": call + answer})
    return rows


@pytest.fixture(scope="module")
def tool_model(foreign, tmp_path_factory):
    work = tmp_path_factory.mktemp("tool-sft")
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    overrides = {"model.init_from": foreign("nemotron3"), "data.path": work / "rows.jsonl", "out_dir": work / "run",
                 "steps": 24, "data.val_rows": 0, "data.batch_size": 4, "data.seq_len": 512, "eval_every": 1000,
                 "checkpoint_every": 1000, "optim.warmup_steps": 2, "optim.lr": 0.02, "log_every": 8}
    args = ["sft", RECIPE, "--no-progress"] + [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]
    assert main(args) == 0
    return work / "run" / "model"


def test_openai_sdk_tool_calling_round_trip(tool_model):
    with running_server(tool_model, max_len=1024, max_tokens_limit=128) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": QUESTIONS[0]}]
        first = client.chat.completions.create(model=s.backend.name, messages=messages, tools=[WEATHER_TOOL],
                                               temperature=0, max_tokens=64, extra_body=NO_THINK)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content
        [call] = choice.message.tool_calls
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

        # the same call, streamed: its name first, then its arguments in pieces as they decode
        stream = client.chat.completions.create(model=s.backend.name, messages=messages, tools=[WEATHER_TOOL],
                                                temperature=0, max_tokens=64, extra_body=NO_THINK, stream=True)
        chunks = list(stream)
        deltas = [d for c in chunks for d in c.choices]
        streamed = [tc for d in deltas if d.delta.tool_calls for tc in d.delta.tool_calls]
        assert streamed[0].function.name == "get_weather" and streamed[0].function.arguments == ""
        assert {t.index for t in streamed} == {0} and len(streamed) > 2
        assert "".join(t.function.arguments for t in streamed) == call.function.arguments
        assert deltas[-1].finish_reason == "tool_calls" and not "".join(d.delta.content or "" for d in deltas)

        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}]
        final = client.chat.completions.create(model=s.backend.name, messages=messages, tools=[WEATHER_TOOL],
                                               temperature=0, max_tokens=64, extra_body=NO_THINK)
        assert final.choices[0].finish_reason == "stop" and final.choices[0].message.tool_calls is None
        assert final.choices[0].message.content == "It is sunny in Paris."

        # tool_choice "none": the call text is not parsed, it comes back as content
        plain = client.chat.completions.create(model=s.backend.name, messages=messages[:1], tools=[WEATHER_TOOL],
                                               tool_choice="none", temperature=0, max_tokens=64, extra_body=NO_THINK)
        assert plain.choices[0].message.tool_calls is None
        assert "<function=get_weather>" in plain.choices[0].message.content
        # a named tool_choice constrains the answer (after any thinking; this model learnt to call without) to a
        # call of it: the model fills in its arguments
        named = client.chat.completions.create(
            model=s.backend.name, messages=messages[:1], tools=[WEATHER_TOOL], temperature=0, max_tokens=64,
            tool_choice={"type": "function", "function": {"name": "get_weather"}}, extra_body=NO_THINK)
        assert json.loads(named.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}
