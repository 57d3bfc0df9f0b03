"""Real clients get parsed objects from a random tiny model, because the grammar guarantees the shape: the openai
SDK's `.parse()` with a pydantic model, and LangChain's `with_structured_output` by JSON schema and by function
calling, over chat and over the Responses API (the server's `--default-chat-template-kwargs` turns thinking off
for clients that cannot ask)."""

from typing import Literal

import pytest
from pydantic import BaseModel

from tests.serve.conftest import API_KEY, running_server

openai = pytest.importorskip("openai")
pytest.importorskip("xgrammar")


class Answer(BaseModel):
    """Where a river rises."""

    river: Literal["Alder", "Kell"]
    north: bool


ASK = "Where does the river Alder rise, and does it flow north?"


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(model_dir, api_key=API_KEY, max_len=2048, max_tokens_limit=512,
                        default_chat_template_kwargs={"enable_thinking": False}) as s:
        yield s


def test_openai_sdk_parse_returns_the_pydantic_object(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    for seed in range(4):
        out = client.chat.completions.parse(model=server.backend.name, messages=[{"role": "user", "content": ASK}],
                                            response_format=Answer, max_tokens=64, temperature=1.0, seed=seed)
        assert isinstance(out.choices[0].message.parsed, Answer)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
@pytest.mark.parametrize("responses_api", [False, True])
def test_langchain_with_structured_output_returns_the_object(server, method, responses_api):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(model=server.backend.name, base_url=server.url + "/v1", api_key=API_KEY,
                                      max_tokens=200, temperature=1.0, max_retries=0, timeout=120,
                                      use_responses_api=responses_api)
    structured = llm.with_structured_output(Answer, method=method)
    for _ in range(3):
        assert isinstance(structured.invoke(ASK), Answer)


def test_litellm_streams_the_same_text_and_a_parsed_object(server, monkeypatch):
    """litellm's OpenAI-compatible provider, as its users point it at a local server: a streamed completion joins
    to the text the openai SDK gets unstreamed (greedy), and its JSON-schema response_format parses."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: litellm's bundled cost map, no fetch
    litellm = pytest.importorskip("litellm")
    ask = {"model": f"openai/{server.backend.name}", "api_base": server.url + "/v1", "api_key": API_KEY,
           "messages": [{"role": "user", "content": ASK}], "max_tokens": 48, "temperature": 0.0, "num_retries": 0,
           "timeout": 120}
    chunks = list(litellm.completion(**ask, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    whole = client.chat.completions.create(model=server.backend.name, messages=ask["messages"], max_tokens=48,
                                           temperature=0.0)
    assert len(chunks) > 2 and streamed == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    out = litellm.completion(**{**ask, "temperature": 1.0}, response_format=Answer)
    assert Answer.model_validate_json(out.choices[0].message.content)
