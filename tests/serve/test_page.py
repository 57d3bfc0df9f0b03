"""The chat page in headless Chromium: self-contained, streams the answer, shows thinking in a collapsible panel.

Needs the Debian `chromium` package (or CHROMIUM=/path) and the `playwright` Python package (its bundled
driver; no browser download): skipped without them.
"""

import json
import os
import shutil

import httpx
import pytest

from tests.serve.conftest import API_KEY

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and os.path.exists(CHROMIUM)),
                                    reason="needs a chromium binary (apt-get install chromium)")


def api_answer(server, messages, thinking: bool, budget: int | None, max_tokens: int) -> dict:
    body = {"messages": messages, "temperature": 0, "max_tokens": max_tokens,
            "chat_template_kwargs": {"enable_thinking": thinking}}
    if budget is not None:
        body["thinking_token_budget"] = budget
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"},
                   timeout=60)
    assert r.status_code == 200
    return r.json()["choices"][0]["message"]


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            pg = browser.new_page()
            requested = []
            pg.on("request", lambda req: requested.append(req.url))
            pg.requested = requested
            pg.console_errors = []  # e.g. "Refused to execute inline script ... Content Security Policy"
            pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
            yield pg
        finally:
            browser.close()


def send(page, text: str) -> None:
    before = page.locator(".assistant").count()
    page.fill("#input", text)
    page.press("#input", "Enter")
    # locators, not wait_for_function: the page's CSP forbids the eval that a string predicate needs
    sync_api.expect(page.locator(".assistant[data-state=done]")).to_have_count(before + 1, timeout=60_000)


@needs_chromium
def test_chat_page_streams_with_thinking_panel_and_switch(server, page, tmp_path):
    page.goto(server.url + "/")
    page.fill("#apikey", API_KEY)
    page.dispatch_event("#apikey", "change")
    page.reload()  # the key is remembered; the model card now loads with it
    sync_api.expect(page.locator("#model")).to_contain_text("tiny-chat")
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "24")
    page.fill("#budget", "5")

    send(page, "What is 6 times 7?")
    turn1 = page.locator(".assistant").nth(0)
    want = api_answer(server, [{"role": "user", "content": "What is 6 times 7?"}], True, 5, 24)
    assert turn1.locator(".reasoning").text_content() == want["reasoning"]
    assert turn1.locator(".content").text_content() == want["content"]
    assert turn1.get_attribute("data-finish") in ("stop", "length")
    panel = turn1.locator("details.thinking")
    assert panel.is_visible()
    was_open = panel.evaluate("d => d.open")
    panel.locator("summary").click()
    assert panel.evaluate("d => d.open") != was_open  # collapsible
    assert "thinking" in turn1.locator(".meta").text_content()

    # thinking off: no panel, and the answer equals the API's for the same two-turn conversation
    page.uncheck("#thinking")
    send(page, "And 7 times 8?")
    turn2 = page.locator(".assistant").nth(1)
    history = [{"role": "user", "content": "What is 6 times 7?"}, {"role": "assistant", "content": want["content"]},
               {"role": "user", "content": "And 7 times 8?"}]
    want2 = api_answer(server, history, False, 5, 24)
    assert turn2.locator(".content").text_content() == want2["content"]
    assert not turn2.locator("details.thinking").is_visible()
    page.screenshot(path=str(tmp_path / "chat.png"))

    # self-contained: every request the page made went to this server; its CSP blocked nothing it needs
    assert page.requested and all(u.startswith(server.url) for u in page.requested)
    assert not [e for e in page.console_errors if "Content Security Policy" in e], page.console_errors


def test_page_html_has_no_external_resources(server):
    html = httpx.get(server.url + "/", timeout=30).text
    assert "<script src" not in html and "<link" not in html and "http://" not in html and "https://" not in html


def sent_bodies(page) -> list[dict]:
    return [json.loads(r.post_data) for r in page.chat_requests]


@pytest.fixture
def chat_page(server, page):
    page.chat_requests = []
    page.on("request", lambda r: r.url.endswith("/v1/chat/completions") and page.chat_requests.append(r))
    page.goto(server.url + "/")
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "8")
    page.fill("#budget", "3")
    return page


@needs_chromium
def test_model_label_updates_when_the_key_is_entered(chat_page):
    page = chat_page
    page.fill("#apikey", "")
    page.dispatch_event("#apikey", "change")
    sync_api.expect(page.locator("#model")).to_contain_text("API key")
    page.fill("#apikey", API_KEY)
    page.dispatch_event("#apikey", "change")  # no reload
    sync_api.expect(page.locator("#model")).to_contain_text("tiny-chat")


@needs_chromium
def test_failed_turn_is_not_sent_again(chat_page):
    page = chat_page
    page.fill("#apikey", "wrong-key")
    page.dispatch_event("#apikey", "change")
    send(page, "first question")
    assert page.locator(".assistant").nth(0).get_attribute("data-finish") == "error"
    page.fill("#apikey", API_KEY)
    page.dispatch_event("#apikey", "change")
    send(page, "second question")
    assert page.locator(".assistant").nth(1).get_attribute("data-finish") in ("stop", "length")
    # the failed turn (and its empty answer) is not part of the conversation the server sees
    assert sent_bodies(page)[-1]["messages"] == [{"role": "user", "content": "second question"}]


@needs_chromium
def test_thinking_checkbox_wins_over_an_earlier_no_think(chat_page, server):
    page = chat_page
    page.fill("#apikey", API_KEY)
    page.dispatch_event("#apikey", "change")
    send(page, "hello /no_think")
    assert not page.is_checked("#thinking")  # the switch shows in the checkbox
    assert not page.locator(".assistant").nth(0).locator("details.thinking").is_visible()
    page.check("#thinking")
    send(page, "and now reason")
    body = sent_bodies(page)[-1]
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert [m["content"] for m in body["messages"] if m["role"] == "user"] == ["hello", "and now reason"]
    # the server gets what the checkbox says: the reply opens a thinking section, as the API's does
    want = api_answer(server, body["messages"], True, 3, 8)
    turn2 = page.locator(".assistant").nth(1)
    assert want["reasoning"] and turn2.locator(".reasoning").text_content() == want["reasoning"]


def test_favicon_has_a_handler(server):
    assert httpx.get(server.url + "/favicon.ico", timeout=30).status_code == 204
