"""Tool-call parsers on fixed model outputs: both Nemotron formats, whole and streamed, malformed calls as text."""

import json

import pytest

from hytron.tokenizer.tools import JsonToolParser, XmlToolParser, parser_for, split_tool_calls, tool_call_stream
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


def _stream(parser, pieces):
    """(content, [(name, arguments)], calls counted) of a streamed answer, calls put together from the deltas."""
    stream = tool_call_stream(parser, TOOLS)
    content, deltas = [], []
    for piece in pieces:
        text, calls = stream.push(piece)
        content.append(text)
        deltas += calls
    text, calls, n = stream.finish()
    calls_by_index: dict = {}
    for d in deltas + calls:
        if "id" in d:  # a call's first delta: its name
            calls_by_index[d["index"]] = [d["function"]["name"], d["function"]["arguments"]]
        else:
            calls_by_index[d["index"]][1] += d["function"]["arguments"]
    return "".join(content) + text, [tuple(c) for c in calls_by_index.values()], n


@pytest.mark.parametrize("fmt", sorted(CASES))
@pytest.mark.parametrize("piece", [1, 3, 7])
def test_streaming_gives_the_same_calls_and_never_leaks_a_marker(fmt, piece):
    parser, text = CASES[fmt]
    content, calls, n = _stream(parser, [text[i:i + piece] for i in range(0, len(text), piece)])
    assert content == "Let me check." + ("\n" if fmt == "xml" else "") and n == 2
    whole = split_tool_calls(parser, text, TOOLS)[1]
    assert calls == [(c.name, c.arguments) for c in whole]  # the deltas join into the very same arguments text
    assert [(name, json.loads(args)) for name, args in calls] == WANT


@pytest.mark.parametrize("fmt, bad", [
    ("xml", "<tool_call>\nget_weather(city='Paris')\n</tool_call>"),
    ("json", '<TOOLCALL>[{"arguments": {}}]</TOOLCALL>'),  # no name: held to the end, then content
    ("json", '<TOOLCALL>{"name": get_weather}</TOOLCALL>'),
    ("json", '<TOOLCALL>[{"name": "get_weather", "arguments": "{\\"city\\": "}]</TOOLCALL>'),
])
def test_malformed_calls_come_back_as_content(fmt, bad):
    parser = CASES[fmt][0]
    assert split_tool_calls(parser, bad, TOOLS) == (bad, [])
    assert _stream(parser, list(bad)) == (bad, [], 0)


@pytest.mark.parametrize("parser, cut, sent", [
    (XmlToolParser(), "Sure <tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n",
     '{"city": "Paris"'),
    (JsonToolParser(), 'Sure <TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris", "days": ',
     '{"city": "Paris"'),
    (JsonToolParser(), 'Sure <TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Par</TOOLCALL>', ""),
])
def test_a_call_cut_off_after_its_first_delta_stays_a_call_when_streamed(parser, cut, sent):
    """Streamed arguments are sent as they decode (vLLM does the same), so a call the model leaves unfinished
    cannot be taken back: its pieces so far were sent; the whole-text parse calls it content."""
    assert split_tool_calls(parser, cut, TOOLS) == (cut, [])
    assert _stream(parser, list(cut)) == ("Sure ", [("get_weather", sent)], 1)


def test_json_arguments_stream_one_argument_at_a_time():
    """Nano 2 calls are not held to the end: each argument is sent once its value is complete, nested values
    whole, in `json.dumps`' spelling whatever the model's spacing."""
    text = '<TOOLCALL>[{"name":"get_weather","arguments":{"city":"Paris","days":2,"opts":{"unit":"C","x":[1,2]}}}]' \
           '</TOOLCALL>'
    stream = tool_call_stream(JsonToolParser(), TOOLS)
    pieces = []
    for ch in text:
        pieces += [d["function"].get("name") or d["function"]["arguments"] for d in stream.push(ch)[1]]
    assert pieces == ["get_weather", '{"city": "Paris"', ', "days": 2', ', "opts": {"unit": "C", "x": [1, 2]}', "}"]
    assert "".join(pieces[1:]) == split_tool_calls(JsonToolParser(), text, TOOLS)[1][0].arguments
    assert stream.finish() == ("", [], 1)


def test_json_calls_in_another_key_order_are_parsed_whole():
    text = '<TOOLCALL>[{"arguments": {"city": "Paris"}, "name": "get_weather"}]</TOOLCALL>'
    assert _stream(JsonToolParser(), list(text)) == ("", [("get_weather", '{"city": "Paris"}')], 1)


def test_parallel_calls_off_stops_after_one():
    for fmt, (parser, text) in CASES.items():
        stream = tool_call_stream(parser, TOOLS, max_calls=1)
        deltas = stream.push(text)[1]
        content, more, n = stream.finish()
        assert n == 1 and {d["index"] for d in deltas + more} == {0}, fmt


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


def test_json_argument_values_with_escapes_and_nesting_stream_exactly():
    """Quotes, backslashes and brackets inside strings do not end a value early, however the text is cut."""
    args = {"city": 'a "} ]\\', "opts": {"x": ["}", {"y": "\u00e9"}]}, "days": 3}
    text = '<TOOLCALL>[{"name": "get_weather", "arguments": ' + json.dumps(args) + "}]</TOOLCALL>"
    whole = split_tool_calls(JsonToolParser(), text, TOOLS)[1]
    assert json.loads(whole[0].arguments) == args
    for piece in (1, 2, 5):
        _, calls, n = _stream(JsonToolParser(), [text[i:i + piece] for i in range(0, len(text), piece)])
        assert n == 1 and calls == [(c.name, c.arguments) for c in whole]
