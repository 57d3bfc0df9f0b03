"""The prose view of a document: hard-wrapped lines joined into paragraphs, code and markup set aside.

Line-level rules (C4's sentence lines, Gopher's duplicate lines) were written for web pages, where a line is a
paragraph. Reference docs, docstrings and READMEs are hard-wrapped at ~72-79 columns and carry code, so those
rules must see paragraphs, and code must not count as prose (a `{` in an example is not a template page).

`prose_view(text)` returns a `View`:
  prose       paragraphs separated by a blank line, one logical line per wrapped paragraph (list items keep
              their own lines); inline code replaced by the identifiers in it, Markdown links by their text,
              images, HTML tags, URLs and heading markers removed
  code_words  words in code: fenced blocks (``` ~~~), doctest paragraphs (>>>), tables, lists of identifiers
              or signatures, and paragraphs indented deeper than the document's base indent that do not read
              as prose (reST literal blocks, grammar, indented examples; indented notes stay prose)
  code_share  code_words / all words
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"^\s*(```|~~~)")
_LIST_ITEM = re.compile(r"^\s*([-*+•]|\d+[.)]|[a-z][.)]|\(\w+\))\s+")
_UNDERLINE = re.compile(r"^\s*([=\-~^*#+`'\".:_])\1{2,}\s*$")  # reST heading under/overlines
# backticks, and Sphinx's plain-text rendering of inline code: a quoted span with code characters in it
_INLINE_CODE = re.compile(r"``[^`\n]+``|`[^`\n]+`|\"[^\"\n]*\"")
_CODE_CHARS = re.compile(r"[{}()\[\]=<>_]")
_TABLE_LINE = re.compile(r"^\s*[+|]")  # reST grid and Markdown pipe tables
_SYMBOLS = re.compile(r"[{}()\[\]=<>:;#$@\\|*/+-]")
# the most frequent English function words: every paragraph of real prose has them, code and garbage do not
FUNCTION_WORDS = frozenset("""
the of and to a in is it that for on with as are be this by or an was from at not which can if you have has will
all but they their we when there its one been so no also these into than then may any only each more other such
should would must do does how what where who use used using see""".split())  # noqa: SIM905 - a word list
_IDENTIFIER_LINE = re.compile(r"^\s*(?=[\w.]*[_.])[A-Za-z_][\w.]*(?:\(\))?,?\s*$")  # `SSL_ERROR_EOF`, `os.path`
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"<?\b(?:https?|ftp)://\S+|\bwww\.\S+")
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_HEADING = re.compile(r"^\s*#{1,6}\s+")
CODE_WORD = "code"  # what inline code becomes in the prose view: one neutral word


@dataclass(frozen=True)
class View:
    prose: str
    code_words: int
    code_share: float


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _signature_line(line: str) -> bool:
    """A short line of code on its own: `len(d)`, `d[key] = value`, `class tuple([iterable])`."""
    s = line.strip()
    return len(s.split()) <= 6 and any(c in s for c in "()[]=") and not s.endswith((".", "!", "?"))


def _looks_like_code(lines: list[str]) -> bool:
    """An indented paragraph is code unless it reads as prose (few symbols, English function words):
    reference docs indent definition bodies and notes, which are prose."""
    text = " ".join(ln.strip() for ln in lines)
    words = text.split()
    letters = sum(c.isalpha() for c in text)
    function = sum(w.lower().strip(".,;:()\"'") in FUNCTION_WORDS for w in words)
    return len(_SYMBOLS.findall(text)) > 0.08 * max(letters, 1) or function < 0.1 * len(words)


def _is_wrapped(lines: list[str]) -> bool:
    """True when a paragraph's line breaks are a hard wrap: (nearly) every line but the last would have
    overflowed the paragraph's width had the next line's first word been added (greedy wrapping)."""
    width = max(len(ln) for ln in lines)
    if len(lines) < 2 or width < 30:
        return False
    slack = max(4, int(0.15 * width))
    pairs = [(a, b) for a, b in zip(lines, lines[1:]) if not _LIST_ITEM.match(b)]
    if not pairs:
        return False
    wrapped = sum(len(a.rstrip()) + 1 + len(b.split()[0]) > width - slack for a, b in pairs if b.split())
    return wrapped >= 0.75 * len(pairs)


def _unwrap(lines: list[str]) -> list[str]:
    """Logical lines of a wrapped paragraph: continuation lines joined, each list item its own line."""
    out: list[str] = []
    for ln in lines:
        if out and not _LIST_ITEM.match(ln):
            out[-1] += " " + ln.strip()
        else:
            out.append(ln.strip())
    return out


def _code_words(m: re.Match) -> str:
    """Inline code as the words in it (`str.format()` -> `str format`): identifiers read as words, and the
    braces and brackets of code do not reach the prose rules. A quoted span without code characters is
    an ordinary quotation and stays."""
    if m.group(0).startswith('"') and not _CODE_CHARS.search(m.group(0)):
        return m.group(0)
    return " ".join(re.findall(r"[^\W\d_]\w*", m.group(0))) or CODE_WORD


def _clean_inline(line: str) -> str:
    if "<" in line:
        line = _TAG.sub("", line)
    if "](" in line:
        line = _LINK.sub(r"\1", _IMAGE.sub("", line))
    if "://" in line or "www." in line:
        line = _URL.sub("", line)
    if "`" in line or '"' in line:
        line = _INLINE_CODE.sub(_code_words, line)
    return _HEADING.sub("", line).strip() if line.lstrip().startswith("#") else line.strip()


def _paragraphs(text: str) -> list[list[str]]:
    """Blank-line separated paragraphs; a fenced block is one paragraph whatever blank lines it holds."""
    paras, cur, fenced = [], [], False
    for ln in text.splitlines():
        if _FENCE.match(ln) and (fenced or not cur or ln.lstrip().startswith("```")):  # not a ~~~ underline
            if fenced:
                cur.append(ln)
                paras.append(cur)
                cur, fenced = [], False
                continue
            if cur:
                paras.append(cur)
            cur, fenced = [ln], True
            continue
        if not fenced and not ln.strip():
            if cur:
                paras.append(cur)
            cur = []
            continue
        cur.append(ln)
    if cur:
        paras.append(cur)
    return paras


def prose_view(text: str) -> View:
    paras = _paragraphs(text.replace("\r\n", "\n").replace("\t", "    "))
    nonblank = [ln for p in paras for ln in p if ln.strip()]
    base = min((_indent(ln) for ln in nonblank), default=0)
    prose, code_words, all_words = [], 0, 0
    for p in paras:
        n = sum(len(ln.split()) for ln in p)
        all_words += n
        lines = [ln for ln in p if ln.strip()]
        is_code = (_FENCE.match(p[0]) is not None or p[0].lstrip().startswith(">>>")
                   or all(_IDENTIFIER_LINE.match(ln) or _TABLE_LINE.match(ln) or _signature_line(ln) for ln in lines)
                   or (all(_indent(ln) > base for ln in lines) and _looks_like_code(lines)))
        if is_code:
            code_words += n
            continue
        lines = [ln for ln in p if not _UNDERLINE.match(ln)]
        if not lines:
            continue
        if _is_wrapped(lines):
            lines = _unwrap(lines)
        lines = [c for c in (_clean_inline(ln) for ln in lines) if c]
        if lines:
            prose.append("\n".join(lines))
    return View("\n\n".join(prose), code_words, code_words / max(all_words, 1))
