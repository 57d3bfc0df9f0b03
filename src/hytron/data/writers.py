"""Curated output shards: JSONL, one record per line, written atomically, optionally compressed.

Layout of a curation output folder OUT (stable; other stages read it):

    OUT/kept/part-NNNNN.jsonl      kept documents, one file per input shard, in input order:
        {"id": input id, "text": cleaned text (Unicode repaired, PII redacted), "source": str,
         "quality_bucket": 0..4 (4 = best) or null when quality scoring is off,
         "meta": {input fields other than id/text/source, "language", "language_score", "quality_scores",
                  "pii_redacted", "unicode_repaired", "tokens"}}
    OUT/removed/part-NNNNN.jsonl   removed documents and malformed input, same order:
        {"id", "text" (as read; raw line for malformed input), "source", "step", "removal_reason",
         "score" (the value the rule compared, or null), "detail" (e.g. the id it duplicates), "meta"}
    OUT/synthetic/part-NNNNN.jsonl rephrased documents (only when rephrase.enabled):
        {"id": "<parent id>#<style>", "text", "source": "<source>/synthetic-<style>", "quality_bucket",
         "meta": {"parent_id", "style", "generator"}}
    OUT/manifest.json              the data card (see hytron.data.pipeline)

`output.compression` picks the suffix: none -> .jsonl (default), gzip -> .jsonl.gz, zstd -> .jsonl.zst.
`iter_records(OUT, "kept")` reads any of them back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from hytron.data.io import open_text

SUFFIX = {"none": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}


class ShardWriter:
    """Writes `OUT/<kind>/part-NNNNN<suffix>` through a temporary file renamed on `close()`."""

    def __init__(self, out_dir: str | Path, kind: str, shard_index: int, compression: str = "none"):
        self.path = Path(out_dir) / kind / f"part-{shard_index:05d}{SUFFIX[compression]}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._f = open_text(self.tmp, "w", compression)
        self.count = 0

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        self._f.close()
        os.replace(self.tmp, self.path)


def shard_files(out_dir: str | Path, kind: str = "kept") -> list[Path]:
    folder = Path(out_dir) / kind
    return sorted(p for p in folder.glob("part-*") if not p.name.endswith(".tmp")) if folder.is_dir() else []


def iter_records(out_dir: str | Path, kind: str = "kept") -> Iterator[dict]:
    """Every record of OUT/<kind>/ (kept, removed or synthetic), in shard order."""
    for path in shard_files(out_dir, kind):
        with open_text(path) as f:
            for line in f:
                yield json.loads(line)
