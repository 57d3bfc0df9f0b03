"""PII redaction: emails, phone numbers and IPv4 addresses replaced by typed placeholders.

Regex-based (no model download, deterministic). Placeholders: <EMAIL>, <PHONE>, <IP_ADDRESS>. The
counts per kind go to the document's `pii_redacted` metadata and to the manifest.
"""

from __future__ import annotations

import re

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP_ADDRESS>"}
_PATTERNS = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    # North American style numbers: (555) 123-4567, 555-123-4567, 555.123.4567, +1 555 123 4567
    "phone": re.compile(r"(?<![\w+])(?:\+?1[\s.-])?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\w)"),
    "ip": re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                     r"(?![\w.]*\d)"),
}


def redact(text: str, kinds: list[str] | tuple[str, ...] = ("email", "phone", "ip")) -> tuple[str, dict[str, int]]:
    """Text with each PII match replaced; counts of replacements per kind (only kinds that matched)."""
    counts: dict[str, int] = {}
    for kind in kinds:
        text, n = _PATTERNS[kind].subn(PLACEHOLDERS[kind], text)
        if n:
            counts[kind] = n
    return text, counts


def find(text: str, kinds: list[str] | tuple[str, ...] = ("email", "phone", "ip")) -> list[tuple[str, str]]:
    """(kind, matched text) for every PII match, in pattern order: what `redact` would replace."""
    return [(kind, m.group(0)) for kind in kinds for m in _PATTERNS[kind].finditer(text)]
