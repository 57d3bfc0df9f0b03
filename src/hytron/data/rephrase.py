"""Synthetic rephrasing in Nemotron-CC's styles, through any OpenAI-compatible endpoint or offline.

Styles: `wikipedia` (for low-quality buckets: rewrite as clear encyclopedic prose), and for high-quality
buckets `diverse_qa` (question-answer pairs appended to the document), `distill` (a condensed version),
`extract_knowledge` (the knowledge as textbook passages) and `knowledge_list` (a list of facts).
The prompts below are our own wording of the tasks in the Nemotron-CC paper.

`OpenAIRephraser` POSTs to `{endpoint}/chat/completions` (stdlib only; API key from an environment
variable, if set). `OfflineRephraser` is a deterministic rule-based generator with the same interface,
for tests and for laptops without a model server: same text in, same text out.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

from hytron.data.curate_config import RephraseConfig

PROMPTS = {
    "wikipedia": ("Rewrite the following text as a clear, well-organised passage in the style of an encyclopedia "
                  "article, in good English. Keep every fact; do not add facts. Reply with the passage only."),
    "diverse_qa": ("Write up to 8 varied question-answer pairs about the text below (yes/no, open, comparison, "
                   "problem-solving). Each pair must be answerable from the text. Use the form "
                   "'Question: ... Answer: ...', one pair per line."),
    "distill": ("Write a condensed but accurate version of the text below. Keep the key terms, numbers and "
                "examples; do not turn it into a vague summary. Reply with the text only."),
    "extract_knowledge": ("Rewrite the knowledge contained in the text below as passages of a textbook. Leave out "
                          "anything that carries no knowledge and add nothing. Reply with the passages only."),
    "knowledge_list": ("List the facts, concepts and numbers stated in the text below as a concise list, one "
                       "item per line starting with '- '. No headings."),
}
STYLES = tuple(PROMPTS)
_SENT = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[str]:
    out = []
    for para in text.split("\n"):
        out += [s.strip() for s in _SENT.split(para) if s.strip()]
    return [s for s in out if s.endswith((".", "!", "?"))]


class OfflineRephraser:
    """Deterministic rule-based rewrites, one per style (no model; for tests and offline runs)."""

    name = "offline"

    def rephrase(self, text: str, style: str) -> str | None:
        if style not in PROMPTS:
            raise ValueError(f"rephrase: unknown style {style!r}; known: {list(STYLES)}")
        sents = _sentences(text)
        if not sents:
            return None
        if style == "wikipedia":
            return " ".join(sents)
        if style == "distill":
            return " ".join(sents[: max(1, (len(sents) + 1) // 2)])
        if style == "knowledge_list":
            return "\n".join(f"- {s}" for s in sents)
        if style == "extract_knowledge":
            facts = [s for s in sents if any(c.isdigit() for c in s) or " is " in s or " was " in s]
            return " ".join(facts or sents)
        pairs = []
        for s in sents[:8]:  # diverse_qa: turn "X is Y." into a question about X
            m = re.match(r"(.+?) (is|was|has|lies|flows|rises) (.+)\.$", s)
            if m:
                pairs.append(f"Question: What do we know about {m.group(1)}? Answer: {m.group(1)} "
                             f"{m.group(2)} {m.group(3)}.")
        return text + ("\n\n" + "\n".join(pairs) if pairs else "")


class OpenAIRephraser:
    """Chat-completions client for an OpenAI-compatible server; strips a leading preamble line if present."""

    name = "openai"

    def __init__(self, cfg: RephraseConfig):
        self.cfg = cfg
        self.url = cfg.endpoint.rstrip("/") + "/chat/completions"

    def rephrase(self, text: str, style: str) -> str | None:
        if style not in PROMPTS:
            raise ValueError(f"rephrase: unknown style {style!r}; known: {list(STYLES)}")
        body = {"model": self.cfg.model, "temperature": self.cfg.temperature,
                "messages": [{"role": "system", "content": "You rewrite web text for a language-model corpus."},
                             {"role": "user", "content": f"{PROMPTS[style]}\n\nText:\n{text}"}]}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                reply = json.loads(resp.read())
        except (urllib.error.URLError, TimeoutError) as e:
            raise ValueError(f"rephrase: endpoint {self.url} failed: {e}") from None
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"rephrase: endpoint {self.url} returned no choices[0].message.content") from None
        content = re.sub(r"^(here is[^:\n]*:|paraphrased text:)\s*", "", content.strip(), flags=re.IGNORECASE)
        if style == "diverse_qa":
            content = text + "\n\n" + content  # Nemotron-CC appends the QA pairs to the original document
        return content.strip() or None


def make_rephraser(cfg: RephraseConfig) -> OfflineRephraser | OpenAIRephraser:
    for style in [*cfg.low_styles, *cfg.high_styles]:
        if style not in PROMPTS:
            raise ValueError(f"rephrase styles: unknown style {style!r}; known: {list(STYLES)}")
    return OpenAIRephraser(cfg) if cfg.backend == "openai" else OfflineRephraser()
