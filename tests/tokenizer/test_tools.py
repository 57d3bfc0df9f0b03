"""Tool-call parsers on fixed model outputs: both Nemotron formats, whole and streamed, malformed calls as text."""

import json

import pytest

from hytron.tokenizer.tools import JsonToolParser, ToolCallStream, XmlToolParser, parser_for, split_tool_calls
from tests.fixtures.foreign import NANO2_TEMPLATE, NEMOTRON3_TEMPLATE, WEATHER_TOOL

TOOLS = [WEATHER_TOOL]
XML = ("Let me check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
       "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_weather>\n"
       "<parameter=city>\nSan Francisco, CA\n</parameter>\n</function>\n</tool_call>")
JSON = 'Let me check.<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}, ' \
       '{"name": "get_weather", "arguments": {"city": "San Francisco, CA"}}]</TOOLCALL>'
CASES = {"xml": (XmlToolParser(), XML), "json": (JsonToolParser(), JSON)}
WANT = [("get_weather", {"city": "Paris", "days": 2}), ("get_weather", {"city": "San Francisco, CA"})]


def _calls(calls):
    return [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_parses_calls_and_keeps_the_text_before_them(fmt):
    parser, text = CASES[fmt]
    content, calls = split_tool_calls(parser, text, TOOLS)
    assert content == "Let me check." and _calls(calls) == WANT
    assert len({c.id for c in calls}) == 2 and calls[0].to_openai(0)["function"]["name"] == "get_weather"


@pytest.mark.parametrize("fmt", sorted(CASES))
@pytest.mark.parametrize("piece", [1, 3, 7])
def test_streaming_gives_the_same_calls_and_never_leaks_a_marker(fmt, piece):
    parser, text = CASES[fmt]
    stream = ToolCallStream(parser, TOOLS)
    sent = "".join(stream.push(text[i:i + piece]) for i in range(0, len(text), piece))
    rest, calls = stream.finish()
    assert sent + rest == "Let me check." + ("\n" if fmt == "xml" else "") and _calls(calls) == WANT
    assert "<" not in sent


@pytest.mark.parametrize("fmt, bad", [
    ("xml", "Sure <tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"),  # cut off
    ("xml", "<tool_call>\nget_weather(city='Paris')\n</tool_call>"),
    ("json", '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Par</TOOLCALL>'),
    ("json", '<TOOLCALL>[{"arguments": {}}]</TOOLCALL>'),
])
def test_malformed_calls_come_back_as_content(fmt, bad):
    parser = CASES[fmt][0]
    assert split_tool_calls(parser, bad, TOOLS) == (bad, [])
    stream = ToolCallStream(parser, TOOLS)
    sent = "".join(stream.push(c) for c in bad)
    rest, calls = stream.finish()
    assert sent + rest == bad and calls == []


def test_values_follow_the_schema_types():
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\n42\n</parameter>\n<parameter=days>\nthree\n" \
           "</parameter>\n</function>\n</tool_call>"
    [call] = XmlToolParser().parse_calls(text, TOOLS)
    assert json.loads(call.arguments) == {"city": "42", "days": "three"}  # a string stays one; bad ints stay text


def test_text_without_calls_is_content():
    for parser, _ in CASES.values():
        assert split_tool_calls(parser, "It is sunny.", TOOLS) == ("It is sunny.", [])


def test_parser_is_chosen_from_the_template():
    assert isinstance(parser_for(NEMOTRON3_TEMPLATE), XmlToolParser)
    assert isinstance(parser_for(NANO2_TEMPLATE), JsonToolParser)
    assert parser_for("{{ messages }}") is None and parser_for(NANO2_TEMPLATE, "none") is None
    assert isinstance(parser_for(None, "xml"), XmlToolParser)
    with pytest.raises(ValueError, match="unknown tool parser"):
        parser_for(None, "hermes")
