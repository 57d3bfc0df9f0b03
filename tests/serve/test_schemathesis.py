"""Property-based fuzzing of the server through its own OpenAPI spec: no request may cause a 5xx, and every
request the spec calls valid is served, or refused only for a limit of this server's settings (never for a
rule the spec does not state)."""

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from tests.serve.conftest import API_KEY, running_server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import checks  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# refusals of schema-valid requests that depend on the server's settings (context, n, max_tokens, vocabulary,
# the served name), on a reference the schema cannot state (tool_choice naming a function not in tools), or on
# OpenAI's strict-mode rules for a `strict: true` schema, which JSON Schema cannot state either ("every property
# is required": `required` must list exactly the keys of `properties`); each carries OpenAI's code
SERVER_LIMITS = {"context_length_exceeded", "limit_exceeded", "model_not_found", "unknown_tool",
                 "invalid_function_parameters", "invalid_json_schema"}


def refusal_the_spec_allows(response) -> bool:
    if response.status_code == 413:  # the body cap is a server setting too
        return True
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    return response.status_code in (400, 404) and code in SERVER_LIMITS


def test_no_request_from_the_openapi_spec_causes_a_5xx(model_dir):
    # small limits keep every generated request cheap: long generations are refused with a 400
    with running_server(model_dir, api_key=API_KEY, max_len=96, max_tokens_limit=16, default_max_tokens=4,
                        max_n=2, max_prompts=3, max_body_bytes=32 * 1024) as server:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=AUTH)
        spec = httpx.get(server.url + "/openapi.json", headers=AUTH, timeout=30).json()
        operations = [result.ok() for result in schema.get_all_operations()]
        labels = {op.label for op in operations}
        assert {"POST /v1/chat/completions", "POST /v1/completions", "POST /tokenize", "POST /detokenize",
                "GET /v1/models"} <= labels
        seen, valid = {}, {}
        for op in operations:
            body = spec["paths"][op.path][op.method.lower()].get("requestBody")
            if body:
                valid[op.label] = jsonschema.Draft202012Validator({**body["content"]["application/json"]["schema"],
                                                                   "components": spec["components"]}).is_valid
        for op in operations:

            @given(case=op.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                      derandomize=True)
            def fuzz(case):
                label = case.operation.label
                response = case.call(headers=AUTH, timeout=30)
                seen.setdefault(label, set()).add(response.status_code)
                assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
                # the spec and the validation agree: a body the spec calls valid is not refused for its form
                if label in valid and valid[label](case.body):
                    assert response.status_code < 400 or refusal_the_spec_allows(response), \
                        f"{label}: schema-valid request refused: {case.body!r} -> {response.text[:500]}"
                case.validate_response(response, checks=[checks.not_a_server_error, checks.status_code_conformance,
                                                         checks.content_type_conformance,
                                                         checks.response_schema_conformance])

            fuzz()
        assert server.thread.is_alive()
        # the fuzzer reached real generations, not only refusals
        assert 200 in seen["POST /v1/chat/completions"] and 200 in seen["POST /v1/completions"]
