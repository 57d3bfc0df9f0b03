"""Rephrasing: the offline generator inside the pipeline, and the OpenAI-compatible client against a local
server that speaks the chat-completions protocol."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from hytron.data.curate_config import RephraseConfig
from hytron.data.pipeline import curate
from hytron.data.rephrase import STYLES, OfflineRephraser, OpenAIRephraser, make_rephraser
from hytron.data.writers import iter_records

TEXT = ("Marnoss is a city in Veloria. The Osk river flows through Marnoss. Marnoss was founded in 1096. "
        "Around 564 thousand people live there.")


def test_offline_rephraser_is_deterministic_and_covers_every_style():
    r = OfflineRephraser()
    for style in STYLES:
        out = r.rephrase(TEXT, style)
        assert out and out == r.rephrase(TEXT, style)
    assert r.rephrase(TEXT, "diverse_qa").startswith(TEXT) and "Question:" in r.rephrase(TEXT, "diverse_qa")
    assert r.rephrase(TEXT, "knowledge_list").splitlines()[0] == "- Marnoss is a city in Veloria."
    with pytest.raises(ValueError, match="unknown style"):
        r.rephrase(TEXT, "poem")


@pytest.fixture
def chat_server():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body))
            reply = {"choices": [{"message": {"role": "assistant",
                                              "content": "Here is a paraphrased version: " + body["model"]}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()
    server.server_close()


def test_openai_client_speaks_chat_completions(chat_server, monkeypatch):
    url, seen = chat_server
    monkeypatch.setenv("TEST_KEY", "sekret")
    r = make_rephraser(RephraseConfig(backend="openai", endpoint=url, model="tiny-model", api_key_env="TEST_KEY"))
    assert isinstance(r, OpenAIRephraser)
    assert r.rephrase(TEXT, "wikipedia") == "tiny-model"  # the preamble is stripped
    assert r.rephrase(TEXT, "diverse_qa") == TEXT + "\n\ntiny-model"  # QA pairs are appended to the document
    path, auth, body = seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sekret"
    assert body["model"] == "tiny-model" and TEXT in body["messages"][-1]["content"]


def test_unreachable_endpoint_is_a_clear_error():
    r = OpenAIRephraser(RephraseConfig(backend="openai", endpoint="http://127.0.0.1:9/v1", timeout_s=2))
    with pytest.raises(ValueError, match="endpoint http://127.0.0.1:9/v1/chat/completions failed"):
        r.rephrase(TEXT, "distill")


def test_pipeline_writes_synthetic_docs_by_bucket(tinyweb_small, tmp_path, make_config):
    cfg = make_config()
    cfg.rephrase.enabled = True
    cfg.rephrase.max_docs_per_shard = 5
    m = curate([tinyweb_small], tmp_path / "out", cfg, progress=False)
    synth = list(iter_records(tmp_path / "out", "synthetic"))
    assert synth and m["counts"]["synthetic"] == len(synth)
    kept = {r["id"]: r for r in iter_records(tmp_path / "out", "kept")}
    for s in synth:
        parent = kept[s["meta"]["parent_id"]]
        style = s["meta"]["style"]
        assert s["source"] == f"{parent['source']}/synthetic-{style}"
        expected = ["wikipedia"] if parent["quality_bucket"] in (0, 1) else list(STYLES[1:])
        assert parent["quality_bucket"] in (0, 1, 3, 4) and style in expected
    assert m["counts"]["kept"] + m["counts"]["removed"] == m["counts"]["input"]  # synthetic docs are extra
