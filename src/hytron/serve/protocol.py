"""Request bodies of the OpenAI-compatible API (vLLM's dialect), validated strictly; unknown fields are ignored.

Field bounds and the rules between fields live in the schema, so `/openapi.json` tells clients (and
schemathesis) exactly what is valid; only limits that depend on the server's settings (n, max_tokens, prompt
length, the vocabulary) are checked by the handlers, and those refusals carry a `code` saying so.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

INT64 = 2**63 - 1
MAX_JSON_DEPTH = 64  # nesting of any request field, from the body down (a JSON schema 30 levels deep fits)


class TooDeep(Exception):
    """A request field nested deeper than MAX_JSON_DEPTH (a 400 naming the field; never a RecursionError later,
    in validation, control-token marking or the chat template)."""

    def __init__(self, path: tuple):
        self.param = ".".join(str(p) for p in path[:8])
        super().__init__(f"{self.param}: nested deeper than {MAX_JSON_DEPTH} levels")


def deepest(value, limit: int = MAX_JSON_DEPTH, path: tuple = ()) -> tuple | None:
    """The path to a container nested deeper than `limit` inside `value` (depth 1), or None. Iterative."""
    stack = [(value, 1, path)]
    while stack:
        v, depth, where = stack.pop()
        if depth > limit:
            return where
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, x in items:
            if isinstance(x, (dict, list)):
                stack.append((x, depth + 1, (*where, k)))
    return None


def text_depth(text: str) -> int:
    """Bracket nesting of JSON text (brackets inside strings left out), without parsing it."""
    depth = best = 0
    for m in _BRACKETS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            best = max(best, depth)
        elif c in "]}":
            depth -= 1
    return best


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _valid_unicode(s: str) -> str:
    """JSON may escape lone surrogates (`"\\ud800"`), which are no text: no tokenizer or encoder takes them."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PydanticCustomError("invalid_unicode", "text must be valid Unicode: lone surrogate \\u{code} at "
                                  "character {pos}", {"code": f"{ord(s[e.start]):04x}", "pos": e.start}) from None
    return s


def _integral(v):
    """JSON Schema's `integer` includes 2.0, so the validation must too (never 2.5, "2" or true)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _valid_unicode_inside(v):
    """Every string (keys too) inside a free-form JSON value is valid Unicode."""
    if isinstance(v, str):
        _valid_unicode(v)
    elif isinstance(v, dict):
        for k, x in v.items():
            _valid_unicode(k)
            _valid_unicode_inside(x)
    elif isinstance(v, list):
        for x in v:
            _valid_unicode_inside(x)
    return v


Text = Annotated[StrictStr, AfterValidator(_valid_unicode)]
JSONObject = Annotated[dict, AfterValidator(_valid_unicode_inside)]
def Int(ge: int | None = None, le: int | None = None):  # noqa: N802 (a type, spelled like one)
    """A strict JSON integer in [ge, le]; the bounds sit inside the integral-float conversion, so the schema
    keeps them as `minimum`/`maximum`."""
    return Annotated[int, Strict(), Field(ge=ge, le=le), BeforeValidator(_integral)]
Num = Annotated[float, Strict()]  # a JSON number: 1 and 0.5, never "0.5" or true
Prob = Annotated[Num, Field(ge=0.0, le=1.0)]


def _only(tp, only):
    """`tp` accepted for compatibility, with `only` as its one supported value (and the schema says so)."""

    def check(v, info: ValidationInfo):
        if v is not None and v != only:
            raise PydanticCustomError("unsupported", "{field} is not supported (only {only})",
                                      {"field": info.field_name, "only": repr(only)})
        return v

    return Annotated[tp, AfterValidator(check), Field(json_schema_extra={"enum": [only]})]


def _requires(field: str, value, needs: str, given) -> dict:
    """JSON Schema for "`field` other than `value` needs `needs` == `given`" (hypothesis-jsonschema reads it)."""
    return {"anyOf": [{"properties": {needs: {"const": given}}, "required": [needs]},
                      {"properties": {field: {"enum": [value, None] if value is not None else [None]}}}]}


StopText = Annotated[Text, Field(min_length=1)]
PromptText = Annotated[Text, Field(min_length=1)]
STREAM_RULE = _requires("stream_options", None, "stream", True)
_FREE_CHOICE = {"properties": {"tool_choice": {"enum": ["none", "auto", None]}}}


def _forced_call_rule(fmt: str, free_formats: list) -> dict:
    """JSON Schema for "a tool_choice that forces a call needs tools and leaves the answer's format free"."""
    return {"anyOf": [_FREE_CHOICE, {"required": ["tools"], "properties": {
        "tools": {"type": "array", "minItems": 1}, fmt: {"anyOf": [{"type": "null"}, *free_formats]}}}]}


CHAT_TOOL_RULE = _forced_call_rule("response_format", [{"properties": {"type": {"const": "text"}}}])
RESPONSES_TOOL_RULE = _forced_call_rule("text", [{"properties": {"format": {"anyOf": [
    {"type": "null"}, {"properties": {"type": {"const": "text"}}}]}}}])


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send many fields; unknown ones are ignored (as vLLM)


class _Request(_Body):
    """A whole request body: refused before validation when any field nests deeper than MAX_JSON_DEPTH."""

    @model_validator(mode="before")
    @classmethod
    def _shallow(cls, v):
        if isinstance(v, dict):
            where = deepest(v)
            if where is not None:
                raise TooDeep(where)
        return v


class StreamOptions(_Body):
    include_usage: StrictBool = False
    continuous_usage_stats: _only(StrictBool, False) | None = None  # vLLM's usage on every chunk: not done


class TextPart(_Body):
    type: Literal["text"]
    text: Text

    @model_validator(mode="before")
    @classmethod
    def _only_text(cls, v):
        kind = v.get("type") if isinstance(v, dict) else None
        if kind in ("image_url", "input_image", "image"):
            raise PydanticCustomError("unsupported", "images are not supported (this model reads text parts only)")
        if isinstance(kind, str) and kind != "text":
            raise PydanticCustomError("unsupported", "content parts of type '{kind}' are not supported (only "
                                      "'text')", {"kind": kind[:40]})
        return v


# ---- tools (OpenAI function calling) ----
# a function's name goes into the call format (`<function=NAME>`): letters, digits and `_.:-` (OpenAI: `_-`)
_NAME = r"^[A-Za-z0-9_.:-]+$"
FunctionName = Annotated[Text, Field(min_length=1, max_length=256, pattern=_NAME,
                                     json_schema_extra={"pattern": _NAME})]

_STRICT = ("true: `{}` must follow OpenAI's strict-mode rules (an object at the root, additionalProperties "
           "false and every property required on every object, the supported keywords only), or the request is "
           "refused with a 400 and code `{}`; false or absent: the schema still constrains a forced answer")


class FunctionDef(_Body):
    name: FunctionName
    description: Text | None = None
    parameters: JSONObject | None = None  # a JSON schema
    strict: Annotated[StrictBool | None, Field(description=_STRICT.format(
        "parameters", "invalid_function_parameters"))] = None


class ToolDef(_Body):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Body):
    name: Text


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: NamedFunction


class FunctionCall(_Body):
    name: Text
    arguments: Text  # JSON text (decoded for the chat template, so its nesting is bounded too)

    @field_validator("arguments")
    @classmethod
    def _shallow(cls, v: str) -> str:
        if text_depth(v) > MAX_JSON_DEPTH:
            raise PydanticCustomError("too_deep", "JSON nested deeper than {limit} levels", {"limit": MAX_JSON_DEPTH})
        return v


class ToolCallIn(_Body):
    id: Text | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    # content may be left out only by an assistant message that calls tools (the schema says so too)
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"properties": {"role": {"const": "assistant"}}},
        {"properties": {"tool_calls": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}}},
        {"required": ["content"], "properties": {"content": {"type": ["string", "array"]}}}]})

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    reasoning_content: Text | None = None
    reasoning: Text | None = None
    tool_calls: Annotated[list[ToolCallIn], Field(max_length=128)] | None = None  # assistant turns
    tool_call_id: Text | None = None  # tool turns
    name: Text | None = None

    @model_validator(mode="after")
    def _content_or_calls(self):
        if self.content is None and self.tool_calls and self.role != "assistant":
            raise PydanticCustomError("content_missing", "a {role} message needs content (only an assistant "
                                      "message with tool_calls may leave it out)", {"role": self.role})
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


# names the renderer sets itself (a chat_template_kwargs entry cannot replace them); `self` is Jinja's name for
# the template itself, so a variable of that name could never be read; names starting with "_" are the renderer's
RESERVED_TEMPLATE_KWARGS = frozenset({"messages", "tools", "documents", "add_generation_prompt",
                                      "continue_final_message", "sanitize", "tokenize", "self"})


class ChatTemplateKwargs(_Body):
    """Variables for the chat template (vLLM's `chat_template_kwargs`): any key is passed through but the
    renderer's own names (published in the schema: a schema-valid request is never refused for its key)."""

    model_config = ConfigDict(json_schema_extra={"propertyNames": {"not": {"anyOf": [
        {"enum": sorted(RESERVED_TEMPLATE_KWARGS)}, {"pattern": "^_"}]}}})

    enable_thinking: StrictBool | None = None

    @model_validator(mode="after")
    def _valid_text(self):
        _valid_unicode_inside(self.model_extra or {})
        return self


class JSONSchemaFormat(_Body):
    model_config = ConfigDict(populate_by_name=True)

    name: Annotated[Text, Field(max_length=256)] | None = None
    description: Text | None = None
    schema_: Annotated[JSONObject, Field(alias="schema")]  # required: the answer is held to it
    strict: Annotated[StrictBool | None, Field(description=_STRICT.format("schema", "invalid_json_schema"))] = None


class TextFormat(_Body):
    type: Literal["text"]
    json_schema: None = None


class JSONObjectFormat(_Body):
    type: Literal["json_object"]
    json_schema: None = None


class JSONSchemaResponseFormat(_Body):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


# OpenAI's `response_format`: free text, any JSON object, or JSON that follows a schema (enforced by a grammar,
# `hytron.serve.structured`); a union on `type`, so the published schema itself says json_schema needs a schema
ResponseFormat = Annotated[TextFormat | JSONObjectFormat | JSONSchemaResponseFormat, Field(discriminator="type")]


# OpenAI and vLLM parameters hytron does not implement, with the values that ask for nothing (None is always one):
# sent with any other value they are a 400 naming them, never silently ignored. Fields no one lists here or in
# the request models are ignored, as vLLM does (clients send many: `user`, `metadata`, `prompt_cache_key`, ...).
NOT_SUPPORTED: dict[str, tuple] = {
    "functions": (), "function_call": (),  # the legacy function API: send tools and tool_choice
    "audio": (), "modalities": (["text"],), "prediction": (), "web_search_options": (), "verbosity": (),
    "store": (False,), "service_tier": ("auto", "default"),
    "guided_json": (), "guided_regex": (), "guided_choice": (), "guided_grammar": (), "guided_decoding_backend": (),
    "guided_whitespace_pattern": (), "structured_outputs": (),  # vLLM's own forms: send response_format
    "use_beam_search": (False,), "length_penalty": (1, 1.0), "min_tokens": (0,), "prompt_logprobs": (),
    "bad_words": ([],), "allowed_token_ids": (), "truncate_prompt_tokens": (), "return_tokens_as_token_ids": (False,),
    "typical_p": (1, 1.0), "top_a": (0, 0.0), "mirostat": (0,), "priority": (0,), "prompt_embeds": (),
    "chat_template": (), "documents": (), "continue_final_message": (False,), "add_generation_prompt": (True,),
    "mm_processor_kwargs": (), "kv_transfer_params": (), "vllm_xargs": (), "echo": (False,),
}


# Responses parameters hytron does not implement: any value but None (or their no-op) is a 400 naming them
RESPONSES_NOT_SUPPORTED = {"previous_response_id": (), "conversation": (), "prompt": (), "max_tool_calls": (),
                           "top_logprobs": (0,), "service_tier": ("auto", "default")}


def schema_rules(*rules: dict, refused: dict[str, tuple] = NOT_SUPPORTED):
    """A request model's `json_schema_extra`: the rules between its fields, and the parameters it refuses
    published as what they are (left out, or sent with a value that asks for nothing), so a request the schema
    allows is never refused for them."""

    def extra(schema: dict, cls) -> None:
        schema.setdefault("allOf", []).extend(rules)
        props = schema.setdefault("properties", {})
        for name, allowed in refused.items():
            if name not in cls.model_fields:
                props[name] = {"enum": [None, *allowed], "description": "not supported by this server: leave it out"}

    return extra


class Unsupported(Exception):
    """A parameter hytron does not implement, sent with a value that asks for something (a 400 naming it)."""

    def __init__(self, param: str, hint: str = ""):
        self.param = param
        super().__init__(f"{param} is not supported by this server (leave it out{hint})")


def _refuse_unsupported(cls, v):
    """Before validation: the NOT_SUPPORTED fields a request model does not declare, sent with a live value."""
    if isinstance(v, dict):
        for k in sorted(v.keys() & NOT_SUPPORTED.keys() - cls.model_fields.keys()):
            if v[k] is not None and v[k] not in NOT_SUPPORTED[k]:
                raise Unsupported(k, _HINTS.get(k, ""))
    return v


_HINTS = {"functions": "; send tools", "function_call": "; send tool_choice",
          **{k: "; send response_format" for k in ("guided_json", "guided_regex", "guided_choice", "guided_grammar",
                                                    "structured_outputs")}}


class _Sampling(_Request):
    """Parameters shared by chat and completions."""

    _unsupported = model_validator(mode="before")(classmethod(_refuse_unsupported))

    model: Text | None = None
    n: Int(1, 128) = 1
    temperature: Annotated[Num, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Num, Field(gt=0.0, le=1.0)] | None = None
    top_k: Int(-1, 1 << 20) | None = None  # -1 or 0 = off
    min_p: Prob | None = None
    seed: Int(-INT64 - 1, INT64) | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=64)] | None = None
    stop_token_ids: Annotated[list[Int(0)], Field(max_length=64)] | None = None
    include_stop_str_in_output: StrictBool = False
    ignore_eos: StrictBool = False
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    # vLLM's penalties (hytron.infer.sampling.apply_penalties): presence and frequency count generated tokens,
    # repetition divides positive logits (multiplies negative ones) of ids in the prompt or the output
    presence_penalty: Annotated[Num, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[Num, Field(ge=-2.0, le=2.0)] | None = None
    repetition_penalty: Annotated[Num, Field(gt=0.0, allow_inf_nan=False)] | None = None
    # vLLM's detokenizer options: special tokens out of the text (markers a tool parser reads are still seen by
    # it), and whether the tokenizer decodes around the special tokens kept
    skip_special_tokens: StrictBool = True
    spaces_between_special_tokens: StrictBool = True
    response_format: ResponseFormat | None = None
    # token id (a decimal string) -> bias added to its logit before sampling, as in vLLM and OpenAI
    logit_bias: Annotated[dict[Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,9})$")],
                               Annotated[Num, Field(ge=-100.0, le=100.0)]], Field(max_length=1024, json_schema_extra={
                                   "additionalProperties": False})] | None = None
    user: Text | None = None

    @field_validator("stream_options")
    @classmethod
    def _needs_stream(cls, v, info: ValidationInfo):
        if v is not None and info.data.get("stream") is False:
            raise PydanticCustomError("stream_options", "stream_options is only allowed with stream=true")
        return v

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatCompletionRequest(_Sampling):
    model_config = ConfigDict(json_schema_extra=schema_rules(STREAM_RULE, _requires("top_logprobs", 0, "logprobs",
                                                                                    True), CHAT_TOOL_RULE))

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)]
    max_tokens: Int(1, 1 << 24) | None = None
    max_completion_tokens: Int(1, 1 << 24) | None = None
    logprobs: StrictBool = False
    top_logprobs: Int(0, 20) | None = None
    # reasoning: on/off via the template kwarg, /think and /no_think in messages, or reasoning_effort "none"
    chat_template_kwargs: ChatTemplateKwargs | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    thinking_token_budget: Int(0, 1 << 24) | None = None
    max_thinking_tokens: Int(0, 1 << 24) | None = None  # NIM's name
    include_reasoning: StrictBool = True
    # tools: rendered through the model's chat template; calls in the output come back as `tool_calls`
    tools: Annotated[list[ToolDef], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool = True

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, v, info: ValidationInfo):
        if v and info.data.get("logprobs") is False:
            raise PydanticCustomError("top_logprobs", "top_logprobs needs logprobs=true")
        return v


TokenIds = list[Int(0)]


class CompletionRequest(_Sampling):
    model_config = ConfigDict(json_schema_extra=schema_rules(STREAM_RULE))

    prompt: PromptText | Annotated[list[PromptText], Field(min_length=1)] | Annotated[TokenIds, Field(min_length=1)] \
        | Annotated[list[Annotated[TokenIds, Field(min_length=1)]], Field(min_length=1)]
    max_tokens: Int(0, 1 << 24) | None = 16
    echo: StrictBool = False
    logprobs: Int(0, 20) | None = None
    suffix: _only(Text, "") | None = None
    best_of: _only(Int(), 1) | None = None  # no server-side ranking

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [list(p)]
        return list(p)


class TokenizeRequest(_Request):
    """Exactly one of `prompt` and `messages` (the handler says which is wrong, the schema says so too)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
        {"required": ["messages"], "properties": {"messages": {"type": "array"}}}]})

    model: Text | None = None
    prompt: Text | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)] | None = None
    add_special_tokens: StrictBool = True  # what the tokenizer's post-processor adds (e.g. BOS) to a prompt
    add_generation_prompt: StrictBool = True
    return_token_strs: StrictBool = False
    chat_template_kwargs: ChatTemplateKwargs | None = None
    tools: Annotated[list[ToolDef], Field(max_length=128)] | None = None


class DetokenizeRequest(_Request):
    model: Text | None = None
    tokens: Annotated[TokenIds, Field(max_length=1 << 20)]


# ---- the Responses API (`POST /v1/responses`, translated onto chat by `hytron.serve.responses`) ----
class InputText(_Body):
    type: Literal["input_text", "output_text", "text", "summary_text", "reasoning_text"]
    text: Text


_ITEM_NEEDS = {"message": ("role", "content"), "function_call": ("call_id", "name", "arguments"),
               "function_call_output": ("call_id", "output"), "reasoning": ("summary",)}


def _item_rule(kind: str, typed: bool) -> dict:
    need = _ITEM_NEEDS[kind]
    return {"required": [*need, *(["type"] if typed else [])],
            "properties": {**{k: {"not": {"type": "null"}} for k in need},
                           **({"type": {"const": kind}} if typed else {})},
            **({} if typed else {"not": {"required": ["type"]}})}


class ResponseInputItem(_Body):
    """A message (`role` + `content`), a `function_call` the model made, its `function_call_output`, or a
    `reasoning` item (its summary goes back as the next assistant turn's reasoning)."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [_item_rule("message", False)] + [
        _item_rule(k, True) for k in _ITEM_NEEDS]})

    type: Literal["message", "function_call", "function_call_output", "reasoning"] = "message"
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: Text | list[InputText] | None = None
    call_id: Text | None = None
    name: Text | None = None
    arguments: Text | None = None
    output: Text | None = None
    summary: list[InputText] | None = None

    @model_validator(mode="after")
    def _complete(self):
        need = _ITEM_NEEDS[self.type]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise PydanticCustomError("item_incomplete", "an item of type {type} needs {field}",
                                      {"type": self.type, "field": missing[0]})
        return self

    def text(self) -> str:
        parts = self.content if isinstance(self.content, list) else self.summary or []
        return self.content if isinstance(self.content, str) else "".join(p.text for p in parts)


class FunctionTool(_Body):
    type: Literal["function"]
    name: FunctionName
    description: Text | None = None
    parameters: JSONObject | None = None
    strict: StrictBool | None = None


class NamedFunctionChoice(_Body):
    type: Literal["function"]
    name: Text


class TextFormat(_Body):
    """`text.format`: Responses' spelling of response_format (the schema's fields sit beside `type`)."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[Text, Field(max_length=256)] | None = None
    description: Text | None = None
    schema_: Annotated[JSONObject | None, Field(alias="schema")] = None
    strict: StrictBool | None = None


class TextOptions(_Body):
    format: TextFormat | None = None
    verbosity: _only(Text, "medium") | None = None


class ReasoningOptions(_Body):
    effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None  # the summary is the whole thinking span


class ResponsesRequest(_Request):
    model_config = ConfigDict(json_schema_extra=schema_rules(RESPONSES_TOOL_RULE, refused=RESPONSES_NOT_SUPPORTED))

    model: Text | None = None
    input: Text | Annotated[list[ResponseInputItem], Field(min_length=1, max_length=1024)]
    instructions: Text | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: StrictBool = True
    max_output_tokens: Int(1, 1 << 24) | None = None
    temperature: Annotated[Num, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Num, Field(gt=0.0, le=1.0)] | None = None
    stream: StrictBool = False
    reasoning: ReasoningOptions | None = None
    text: TextOptions | None = None
    metadata: dict[Text, Text] | None = None  # echoed back
    user: Text | None = None
    store: _only(StrictBool, False) | None = None  # nothing is stored: no previous_response_id to refer to
    truncation: _only(Text, "disabled") | None = None
    background: _only(StrictBool, False) | None = None
    include: Annotated[list[Text], Field(max_length=0)] | None = None
    _unsupported = model_validator(mode="before")(classmethod(lambda cls, v: _refuse_responses(cls, v)))




def _refuse_responses(cls, v):
    if isinstance(v, dict):
        for k in sorted(v.keys() & RESPONSES_NOT_SUPPORTED.keys()):
            if v[k] is not None and v[k] not in RESPONSES_NOT_SUPPORTED[k]:
                raise Unsupported(k)
    return v


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int | str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# ---- response shapes (documentation in /openapi.json; the fuzz test validates responses against them) ----
class UsageDetails(BaseModel):
    reasoning_tokens: int


class PromptUsageDetails(BaseModel):
    cached_tokens: int  # prompt tokens restored from the prefix cache instead of prefilled


class SpeculativeUsage(BaseModel):
    """hytron's: drafts of the MTP head (--speculative-tokens); mean_accepted_length = tokens per verify step."""

    draft_tokens: int
    accepted_tokens: int
    acceptance_rate: float
    mean_accepted_length: float


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: UsageDetails | None = None
    prompt_tokens_details: PromptUsageDetails | None = None
    speculative: SpeculativeUsage | None = None


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: dict


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict | None
    finish_reason: str | None
    stop_reason: str | int | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None
    stop_reason: str | int | None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str | None = None
    parent: str | None = None
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class ResponseObject(BaseModel):
    """`/v1/responses`' answer (the fields clients read; the rest echo the request)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress"]
    model: str
    output: list[dict]
    usage: dict | None


class DetokenizeResponse(BaseModel):
    prompt: str
