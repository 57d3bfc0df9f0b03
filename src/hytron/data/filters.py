"""Document filters: Unicode repair, language identification, and the heuristic rules of each profile.

Each filter answers `(keep, reason, score)`: `reason` names the rule that removed the document (None when
kept) and `score` is the measured value that rule compared with its threshold, so a removal can be
explained and thresholds re-tuned from the removed/ records alone.

Profiles (`PROFILES`) are lists of rules, each `rule(text, view, cfg) -> Verdict` over the raw text and its
prose view (hytron.data.textview):
  web        Gopher quality, Gopher repetition and C4 page rules, for crawls; they judge the prose view, so
             hard-wrapped lines count as the paragraphs they are and code examples are not prose
  documents  for your own files: only the junk detectors that hold on real technical text (encoding garbage,
             gibberish, keyword spam, navigation boilerplate); no line-punctuation, sentence-count, curly
             bracket or alpha-word rules, which exist to strip web pages
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

from hytron.data.textview import FUNCTION_WORDS, View, prose_view

if TYPE_CHECKING:  # curate_config validates `profile` against PROFILES, so it imports this module
    from hytron.data.curate_config import HeuristicConfig, LanguageConfig

Verdict = tuple[bool, "str | None", "float | None"]
KEEP: Verdict = (True, None, None)


def repair_unicode(text: str) -> tuple[str, bool]:
    """Fix mojibake and broken escapes with ftfy; pure-ASCII text (most of it) skips the costly check.

    Typographic quotes are kept (ftfy's `uncurl_quotes` is off): repair should undo damage, not restyle."""
    if text.isascii():
        return text, False
    import ftfy

    fixed = ftfy.fix_text(text, uncurl_quotes=False)
    return fixed, fixed != text


def identify_language(text: str, cfg: LanguageConfig) -> tuple[Verdict, str, int]:
    """CLD2 (compiled tables ship inside pycld2): verdict, language code, confidence percent."""
    import pycld2

    try:
        reliable, _, details = pycld2.detect(text)
    except pycld2.error:  # CLD2 rejects some byte sequences; retry on a printable-only copy
        try:
            reliable, _, details = pycld2.detect("".join(c for c in text if c.isprintable() or c.isspace()))
        except pycld2.error:  # binary garbage read as text: no language
            return (False, "language_unknown", 0.0), "un", 0
    code, conf = details[0][1], details[0][2]
    if code == "un" or conf < cfg.min_confidence:
        return (False, "language_unknown", float(conf)), "un", conf
    if code not in cfg.keep:
        return (False, f"language_{code}", float(conf)), code, conf
    return KEEP, code, conf


# ---- heuristics ----------------------------------------------------------------------------------------------

_STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])  # Gopher's list
_BULLETS = ("•", "●", "○", "▪", "-", "*", "·")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?:\s|$)")
_TERMINAL = ('.', '!', '?', '"', "'", "”", "’", ":")  # ':' ends a paragraph that introduces an example
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


def _dup_fraction(items: list[str]) -> tuple[float, float]:
    """(share of items that repeat an earlier item, share of characters in those repeats)."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_n = dup_chars = total_chars = 0
    for it in items:
        total_chars += len(it)
        if it in seen:
            dup_n += 1
            dup_chars += len(it)
        seen.add(it)
    return dup_n / len(items), dup_chars / max(total_chars, 1)


def _top_ngram_char_ratio(words: list[str], n: int) -> float:
    grams = Counter(zip(*(words[i:] for i in range(n))))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    if count <= 1:
        return 0.0
    return sum(len(w) for w in gram) * count / max(sum(len(w) for w in words), 1)


def _dup_ngram_char_ratio(words: list[str], n: int) -> float:
    """Share of characters covered by n-grams that occur more than once (Gopher's duplicate n-gram rule)."""
    covered = [False] * len(words)
    seen: dict[tuple, int] = {}
    for i in range(len(words) - n + 1):
        g = tuple(words[i:i + n])
        if g in seen:
            for j in range(seen[g], seen[g] + n):
                covered[j] = True
            for j in range(i, i + n):
                covered[j] = True
        else:
            seen[g] = i
    total = sum(len(w) for w in words)
    return sum(len(w) for w, c in zip(words, covered) if c) / max(total, 1)


def gopher_quality(text: str, view: View, cfg: HeuristicConfig) -> Verdict:
    """Gopher's quality rules; length counts all words (code too), the rest measure the prose."""
    n = len(text.split())
    if n < cfg.min_doc_words:
        return False, "gopher_short_doc", float(n)
    if n > cfg.max_doc_words:
        return False, "gopher_long_doc", float(n)
    text = view.prose
    words = text.split()
    n = len(words)
    if n == 0:  # all code: nothing here for prose rules to judge
        return KEEP
    mean_len = sum(len(w) for w in words) / n
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return False, "gopher_mean_word_length", mean_len
    symbols = (text.count("#") + text.count("...") + text.count("…")) / n
    if symbols > cfg.max_symbol_word_ratio:
        return False, "gopher_symbol_ratio", symbols
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines:
        # a bulleted sentence is prose; bullet lines that are not sentences are link and menu lists
        bullets = sum(ln.startswith(_BULLETS) and not ln.endswith(_TERMINAL) for ln in lines) / len(lines)
        if bullets > cfg.max_bullet_lines_ratio:
            return False, "gopher_bullet_lines", bullets
        ellipsis = sum(ln.endswith(("...", "…")) for ln in lines) / len(lines)
        if ellipsis > cfg.max_ellipsis_lines_ratio:
            return False, "gopher_ellipsis_lines", ellipsis
    alpha = sum(any(c.isalpha() for c in w) for w in words) / n
    if alpha < cfg.min_alpha_words_ratio:
        return False, "gopher_alpha_words", alpha
    stops = sum(w.lower() in _STOP_WORDS for w in words)
    if stops < cfg.min_stop_words:
        return False, "gopher_stop_words", float(stops)
    return KEEP


def gopher_repetition(text: str, view: View, cfg: HeuristicConfig) -> Verdict:
    text = view.prose
    words = text.split()
    paras = [p.strip() for p in re.split(r"\n{2,}", text) if p.strip()]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    para_frac, para_chars = _dup_fraction(paras)
    if para_frac > cfg.max_dup_para_ratio:
        return False, "gopher_dup_paragraphs", para_frac
    if para_chars > cfg.max_dup_para_char_ratio:
        return False, "gopher_dup_paragraph_chars", para_chars
    line_frac, line_chars = _dup_fraction(lines)
    if line_frac > cfg.max_dup_line_ratio:
        return False, "gopher_dup_lines", line_frac
    if line_chars > cfg.max_dup_line_char_ratio:
        return False, "gopher_dup_line_chars", line_chars
    lw = [w.lower() for w in words]
    for n, limit in sorted(cfg.max_top_ngram_char_ratio.items(), key=lambda kv: int(kv[0])):
        r = _top_ngram_char_ratio(lw, int(n))
        if r > limit:
            return False, f"gopher_top_{n}gram", r
    # duplicated n-gram coverage can only shrink as n grows: when the smallest n is under every threshold,
    # the larger ones are too (the fast path for ordinary text)
    dup = sorted(cfg.max_dup_ngram_char_ratio.items(), key=lambda kv: int(kv[0]))
    first = _dup_ngram_char_ratio(lw, int(dup[0][0])) if dup else 0.0
    if dup and first <= min(v for _, v in dup):
        return KEEP
    for n, limit in dup:
        r = first if n == dup[0][0] else _dup_ngram_char_ratio(lw, int(n))
        if r > limit:
            return False, f"gopher_dup_{n}gram", r
    return KEEP


def c4_quality(text: str, view: View, cfg: HeuristicConfig) -> Verdict:
    """C4's page rules on the prose: lorem ipsum and curly braces remove a page; then count sentences on the
    lines C4 would keep (terminal punctuation, enough words, no javascript or policy boilerplate)."""
    text = view.prose
    if not text:
        return KEEP
    low = text.lower()
    if "lorem ipsum" in low:
        return False, "c4_lorem_ipsum", None
    if "{" in text:
        return False, "c4_curly_bracket", None
    sentences = 0
    for ln in text.splitlines():
        s = ln.strip()
        if not s.endswith(_TERMINAL) or len(s.split()) < cfg.c4_min_words_per_line:
            continue
        sl = s.lower()
        if "javascript" in sl or any(p in sl for p in _POLICY):
            continue
        sentences += len(_SENTENCE_END.findall(s + " "))
    if sentences < cfg.c4_min_sentences:
        return False, "c4_few_sentences", float(sentences)
    return KEEP


# ---- documents profile: junk detectors that hold on real text ------------------------------------------------

_ALPHA_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_BOILER_MARKERS = re.compile(r"cookie|privacy|terms of (?:use|service)|all rights reserved|copyright|©|share on|"
                             r"follow us|back to top|sign (?:in|up)|log ?in|subscribe|newsletter|sitemap|\|.*\|",
                             re.IGNORECASE)


def _garbage_chars(text: str) -> int:
    """Characters no text encoder writes: controls other than tab/newline, U+FFFD, private use."""
    return sum(1 for c in text if (c < " " and c not in "\t\n\r") or "\x7f" <= c <= "\x9f" or c == "\ufffd"
               or "\ue000" <= c <= "\uf8ff")


def encoding_garbage(text: str, view: View, cfg: HeuristicConfig) -> Verdict:
    """Binary data or bytes decoded with the wrong codec (what Unicode repair could not undo)."""
    share = _garbage_chars(text) / max(len(text), 1)
    return (False, "encoding_garbage", share) if share > cfg.max_garbage_char_ratio else KEEP


def gibberish(text: str, view: View, cfg: HeuristicConfig) -> Verdict:
    """Random letters, hex or symbol soup: prose without the function words every language-like text has."""
    words = _ALPHA_WORD.findall(view.prose.lower())
    tokens = view.prose.split()
    if len(tokens) < cfg.min_judged_words:
        return KEEP
    share = sum(w in FUNCTION_WORDS for w in words) / len(tokens)
    return (False, "gibberish", share) if share < cfg.min_function_word_ratio else KEEP


def keyword_spam(text: str, view: View, cfg: HeuristicConfig) -> Verdict:
    """A few keywords repeated: mean share of distinct words in windows of `variety_window` prose words."""
    words = _ALPHA_WORD.findall(view.prose.lower())
    w = cfg.variety_window
    if len(words) < max(cfg.min_judged_words, w):
        return KEEP
    starts = range(0, len(words) - w + 1, max(1, w // 2))
    variety = sum(len(set(words[i:i + w])) for i in starts) / (w * len(starts))
    return (False, "keyword_spam", variety) if variety < cfg.min_word_variety else KEEP


def boilerplate(text: str, view: View, cfg: HeuristicConfig) -> Verdict:
    """Navigation, cookie and footer text: several marker lines and little of the text in sentences."""
    lines = [ln.strip() for ln in view.prose.splitlines() if ln.strip()]
    markers = sum(bool(_BOILER_MARKERS.search(ln)) for ln in lines)
    if markers < cfg.boilerplate_min_marker_lines:
        return KEEP
    words = sum(len(ln.split()) for ln in lines)
    in_sentences = sum(len(ln.split()) for ln in lines
                       if ln.endswith(_TERMINAL) and len(ln.split()) >= cfg.c4_min_words_per_line
                       and not _BOILER_MARKERS.search(ln))
    share = in_sentences / max(words, 1)
    return (False, "boilerplate", share) if share < cfg.boilerplate_max_sentence_share else KEEP


PROFILES = {"web": (gopher_quality, gopher_repetition, c4_quality),
            "documents": (encoding_garbage, keyword_spam, gibberish, boilerplate)}


def heuristic_verdict(text: str, cfg: HeuristicConfig, profile: str = "web", view: View | None = None) -> Verdict:
    """The first failing rule of the profile's list, KEEP if all pass."""
    view = view if view is not None else prose_view(text)
    for rule in PROFILES[profile]:
        verdict = rule(text, view, cfg)
        if not verdict[0]:
            return verdict
    return KEEP
