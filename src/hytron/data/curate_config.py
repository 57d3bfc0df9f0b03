"""The curation config: typed sections for every step, defaults that work without a file.

Load with `load_curate_config(path_or_None)`; a YAML/JSON file may set any subset of fields, e.g.::

    heuristics: {min_doc_words: 30}
    dedup: {threshold: 0.8}
    executor: {kind: ray, workers: 4}

Unknown or mistyped fields are rejected with the field's dotted name (hytron.config.from_dict).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hytron.config import ConfigError, apply_overrides, from_dict, load_mapping
from hytron.data.filters import PROFILES


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {msg}")


@dataclass
class InputConfig:
    text_field: str = "text"
    id_field: str = "id"
    source_field: str = "source"
    max_doc_bytes: int = 1_000_000  # larger documents are removed as `oversized` (kept in removed/)
    # a shard is held in memory while it is staged: plain and compressed JSONL shards and folders' groups of files
    # are about shard_bytes (plus one record), and at most shard_records records (Parquet: exactly that many rows)
    shard_bytes: int = 2_000_000
    shard_records: int = 5000
    html_main_content: bool = True
    # caps that bound memory on hostile input (issue 26): what passes one becomes a counted removal, never a crash
    max_file_bytes: int = 100_000_000  # an .html/.pdf/.docx file, a WARC record body, a DOCX's inflated total
    max_zip_entry_bytes: int = 32_000_000  # one inflated DOCX part (document.xml is ~10-30x its text)
    max_inflate_bytes: int = 64 * 2**30  # decompressed bytes of one .gz/.zst/.bz2/.xz input
    max_inflate_ratio: float = 200.0  # decompressed / compressed bytes (text gzips 3-10x; the 3 GB-line bomb 1000x)

    def __post_init__(self):
        _check(self.max_doc_bytes > 0, "input.max_doc_bytes", "must be positive")
        for name in ("max_file_bytes", "max_zip_entry_bytes", "max_inflate_bytes"):
            _check(getattr(self, name) > 0, f"input.{name}", "must be positive")
        _check(self.max_inflate_ratio >= 1, "input.max_inflate_ratio", "must be at least 1")
        _check(self.shard_bytes >= 1024, "input.shard_bytes", "must be at least 1024")
        _check(self.shard_records >= 1, "input.shard_records", "must be at least 1")


@dataclass
class LanguageConfig:
    enabled: bool = True
    keep: list[str] = field(default_factory=lambda: ["en"])  # ISO 639-1 codes as CLD2 reports them
    min_confidence: int = 50  # CLD2 percent for the top language; below it the text is `language_unknown`

    def __post_init__(self):
        _check(0 <= self.min_confidence <= 100, "language.min_confidence", "must be in 0..100")


@dataclass
class HeuristicConfig:
    """Gopher quality, Gopher repetition and C4 rules (Rae et al. 2021; Raffel et al. 2020) with their defaults."""

    enabled: bool = True
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    max_dup_line_ratio: float = 0.3
    max_dup_para_ratio: float = 0.3
    max_dup_line_char_ratio: float = 0.2
    max_dup_para_char_ratio: float = 0.2
    # n (as a string, so configs round-trip through JSON) -> max share of characters
    max_top_ngram_char_ratio: dict[str, float] = field(default_factory=lambda: {"2": 0.2, "3": 0.18, "4": 0.16})
    max_dup_ngram_char_ratio: dict[str, float] = field(
        default_factory=lambda: {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10})
    c4_min_sentences: int = 3
    c4_min_words_per_line: int = 3
    # the `documents` profile's junk detectors (hytron.data.filters.PROFILES["documents"])
    max_garbage_char_ratio: float = 0.01  # control/replacement/private-use characters: binary or mis-decoded text
    min_function_word_ratio: float = 0.05  # share of prose tokens that are English function words (gibberish)
    min_word_variety: float = 0.3  # distinct words per window of `variety_window` words (keyword spam)
    variety_window: int = 50
    min_judged_words: int = 20  # shorter prose is not judged for gibberish or spam
    boilerplate_min_marker_lines: int = 3  # cookie/privacy/copyright/share/menu lines
    boilerplate_max_sentence_share: float = 0.3  # ... with less than this share of words in sentence lines

    def __post_init__(self):
        _check(0 < self.min_doc_words < self.max_doc_words, "heuristics.min_doc_words",
               "must be positive and below max_doc_words")
        _check(self.variety_window >= 2, "heuristics.variety_window", "must be at least 2")


@dataclass
class DedupConfig:
    exact: bool = True
    fuzzy: bool = True
    ngram: int = 5  # word n-gram shingles
    bands: int = 20  # 20 x 5 = 100 permutations: P(candidate) is 0.97 at Jaccard 0.7, 0.9997 at 0.8
    rows: int = 5
    threshold: float = 0.7  # candidates are kept as duplicates only if their true Jaccard is at least this
    seed: int = 1

    def __post_init__(self):
        _check(0 < self.threshold <= 1, "dedup.threshold", "must be in (0, 1]")
        _check(self.bands >= 1 and self.rows >= 1, "dedup.bands", "bands and rows must be at least 1")
        _check(self.ngram >= 1, "dedup.ngram", "must be at least 1")


@dataclass
class QualityConfig:
    enabled: bool = True
    # JSONL files of high-quality "reference" documents; negatives are a sample of the input ("random")
    reference: list[str] = field(default_factory=list)
    classifiers: list[Literal["linear", "bayes"]] = field(default_factory=lambda: ["linear", "bayes"])
    sample_docs: int = 4000  # input docs sampled as the "random" class
    skip_heuristics_from_bucket: int | None = 3  # buckets >= this skip heuristic filters (Nemotron-CC)
    seed: int = 0

    def __post_init__(self):
        _check(len(self.classifiers) >= 1, "quality.classifiers", "name at least one classifier")
        _check(self.skip_heuristics_from_bucket is None or 0 <= self.skip_heuristics_from_bucket <= 5,
               "quality.skip_heuristics_from_bucket", "must be 0..5 or null")


@dataclass
class DecontamConfig:
    enabled: bool = True
    eval_files: list[str] = field(default_factory=list)  # JSONL; uses the question/problem/prompt/text field
    ngram: int = 13
    min_overlap: float = 0.8  # share of a long item's n-grams a document must contain; short items match whole

    def __post_init__(self):
        _check(0 < self.min_overlap <= 1, "decontam.min_overlap", "must be in (0, 1]")
        _check(self.ngram >= 2, "decontam.ngram", "must be at least 2")


@dataclass
class PIIConfig:
    enabled: bool = True
    kinds: list[Literal["email", "phone", "ip"]] = field(default_factory=lambda: ["email", "phone", "ip"])


@dataclass
class RephraseConfig:
    enabled: bool = False
    backend: Literal["offline", "openai"] = "offline"
    endpoint: str = "http://127.0.0.1:8000/v1"  # any OpenAI-compatible server (vLLM, SGLang, hytron serve, ...)
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"
    low_buckets: list[int] = field(default_factory=lambda: [0, 1])
    high_buckets: list[int] = field(default_factory=lambda: [3, 4])
    low_styles: list[str] = field(default_factory=lambda: ["wikipedia"])
    high_styles: list[str] = field(default_factory=lambda: ["diverse_qa", "distill", "extract_knowledge",
                                                             "knowledge_list"])
    max_docs_per_shard: int | None = None
    timeout_s: float = 120.0
    temperature: float = 0.5


@dataclass
class ExecutorConfig:
    kind: Literal["local", "ray"] = "local"
    workers: int = 0  # 0 = one per CPU core
    ray_address: str | None = None  # None starts a local Ray instance


@dataclass
class OutputConfig:
    compression: Literal["none", "gzip", "zstd"] = "none"


@dataclass
class CurateConfig:
    # which heuristic rules run (a name in hytron.data.filters.PROFILES): `web` for crawls (Gopher + C4 page
    # rules), `documents` for your own files (junk detectors that hold on real text); every other step is shared
    profile: str = "web"
    input: InputConfig = field(default_factory=InputConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    heuristics: HeuristicConfig = field(default_factory=HeuristicConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    pii: PIIConfig = field(default_factory=PIIConfig)
    rephrase: RephraseConfig = field(default_factory=RephraseConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    unicode_repair: bool = True

    def __post_init__(self):
        _check(self.profile in PROFILES, "profile", f"must be one of {list(PROFILES)}, got {self.profile!r}")


def load_curate_config(path: str | Path | None = None, overrides: dict | None = None,
                       default_profile: str | None = None, sets: list[str] | None = None) -> CurateConfig:
    """Defaults (with `default_profile`, if given, unless the file names one), then the file at `path` (if any),
    then `overrides` (nested dict), then `sets` (`key.sub=value`, the `--set` of every verb), validated by name."""
    data = load_mapping(path) if path else {}
    if default_profile is not None:
        data.setdefault("profile", default_profile)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return from_dict(CurateConfig, apply_overrides(data, sets))
