"""`hytron report RUN_DIR`: a self-contained HTML page that renders in headless Chromium without console errors.

Needs the Debian `chromium` package (or CHROMIUM=/path) and the `playwright` Python package (its bundled
driver drives the system browser; no browser download): the browser test is skipped without them.
"""

import json
import os
import re
import shutil

import pytest

from hytron.cli import main
from hytron.report.page import funnel
from tests.eval.tinyrun import build_tiny_run

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run = build_tiny_run(root, steps=4)
    assert main(["eval", str(run["model"]), "--limit", "4", "--evals", str(run["tinyweb"])]) == 0
    assert main(["reproduce", "hybrid", "--quick", "--out", str(root / "hybrid")]) == 0
    assert main(["report", str(run["run"]), "--claims", str(root / "hybrid"), "--cards"]) == 0
    return run, run["run"] / "report.html"


def test_report_is_self_contained_and_complete(report):
    run, path = report
    html = path.read_text()
    for section in ("Summary", "Model", "Loss curves", "Throughput", "Curation funnel", "Data blend", "Evaluation",
                    "Claim: hybrid"):
        assert f"<h2>{section}</h2>" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    manifest = json.loads((run["curated"] / "manifest.json").read_text())
    for reasons in manifest["removed_by_step"].values():
        for reason in reasons:
            assert f"<td>{reason}</td>" in html  # every removal reason of the funnel is listed
    assert "data:image/png;base64," in html  # the claim's plots are embedded
    assert "Verdict: " in html and "95% CI" in html  # the claim's verdict and interval are shown
    assert (run["model"] / "README.md").is_file() and (run["model"] / "DATA_CARD.md").is_file()


def test_funnel_counts_follow_the_pipeline_order():
    cur = {"counts": {"input": 100, "synthetic": 0},
           "removed_by_step": {"heuristics": {"short": 5}, "language": {"language_de": 10}, "read": {"bad": 1}}}
    chart, rows = funnel(cur)
    labels = re.findall(r">(input|after \w+ \(-\d+\))<", chart)
    assert labels == ["input", "after read (-1)", "after language (-10)", "after heuristics (-5)"]
    assert ">84<" in chart  # 100 - 1 - 10 - 5 remain


@pytest.mark.skipif(not CHROMIUM, reason="needs a chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(report):
    sync_api = pytest.importorskip("playwright.sync_api")
    _, path = report
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            messages, requests = [], []
            page.on("console", lambda m: messages.append((m.type, m.text)))
            page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_function("document.documentElement.dataset.ready !== undefined")
            charts = int(page.evaluate("document.documentElement.dataset.ready"))
            assert charts >= 6  # loss, bpb, throughput, funnel, source and bucket bars
            plots = json.loads((path.parent.parent / "hybrid" / "result.json").read_text())["plots"]
            assert len(plots) >= 2 and page.locator("img.plot").count() == len(plots)  # every claim plot embedded
            assert all(page.evaluate(f"document.querySelectorAll('img.plot')[{i}].naturalWidth") > 0
                       for i in range(len(plots)))
            # sorting a table by clicking its header works (the page's script ran without errors)
            table = page.locator("h2:text('Curation funnel') ~ table").first
            cells = table.locator("tbody tr td:nth-child(3)")
            counts = lambda: [int(t.replace(",", "")) for t in cells.all_inner_texts()]
            table.locator("th").nth(2).click()
            assert counts() == sorted(counts())
            table.locator("th").nth(2).click()
            assert counts() == sorted(counts(), reverse=True)
        finally:
            browser.close()
    errors = [m for m in messages if m[0] in ("error", "pageerror", "warning")]
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
