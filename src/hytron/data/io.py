"""One home for the file I/O every stage shares: (compressed) JSONL and atomic text/JSON writes. No torch.

Compression follows the file name (`.gz` gzip, `.zst`/`.zstd` zstandard, anything else plain) unless a
caller names it. Writes go to `NAME.tmp` and are renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

COMPRESSIONS = ("none", "gzip", "zstd")


def compression_of(path: str | Path) -> str:
    name = str(path).lower()
    return "gzip" if name.endswith(".gz") else "zstd" if name.endswith((".zst", ".zstd")) else "none"


def _zstandard():
    try:
        import zstandard
    except ImportError:
        raise ImportError("reading or writing .zst files needs zstandard: pip install 'hytron[curate]'") from None
    return zstandard


class _ZstdFrames(io.RawIOBase):
    """Decompressed bytes of a (multi-frame) .zst file that raise EOFError when the file ends inside a frame:
    zstandard's `stream_reader` just stops there, which turned a cut-off download into a silent partial read."""

    def __init__(self, path: str | Path):
        self._dctx = _zstandard().ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._error = _zstandard().ZstdError
        self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._buf = b""
        self._inside = False  # input was fed to the current frame and its end not seen yet

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            data = self._raw.read(1 << 16)
            if not data:
                if self._inside:
                    raise EOFError(f"{self._raw.name}: zstd stream truncated (the file ends inside a frame)")
                return 0
            while data:
                try:
                    self._buf += self._obj.decompress(data)
                except self._error as e:  # corrupt frame: damage the caller records, like gzip's OSError
                    raise OSError(f"{self._raw.name}: zstd stream corrupt ({e})") from e
                self._inside = not self._obj.eof
                data = b""
                if self._obj.eof:  # a frame ended: the rest of the chunk starts the next one
                    data = self._obj.unused_data
                    self._obj = self._dctx.decompressobj()
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_bytes(path: str | Path, compression: str | None = None) -> IO[bytes]:
    """A binary reader of `path`, decompressing by name (or `compression`)."""
    kind = compression or compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "zstd":
        return io.BufferedReader(_ZstdFrames(path))
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def open_text(path: str | Path, mode: str = "r", compression: str | None = None) -> IO[str]:
    """A UTF-8 text reader (`mode` "r") or writer ("w") of `path`, (de)compressing by name or `compression`.
    gzip output has no timestamp, so the same records always give the same bytes."""
    kind = compression or compression_of(path)
    if mode == "r":
        return io.TextIOWrapper(open_bytes(path, kind), encoding="utf-8", errors="strict")
    if mode != "w":
        raise ValueError(f"open_text: mode must be 'r' or 'w', got {mode!r}")
    raw = open(path, "wb")  # noqa: SIM115 - owned by the wrapper
    if kind == "gzip":
        raw = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
    elif kind == "zstd":
        raw = _zstandard().ZstdCompressor().stream_writer(raw)
    return io.TextIOWrapper(raw, encoding="utf-8")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) of a (compressed) JSONL file; blank lines skipped, a bad line raises `FILE:LINE: why`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}")
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None


def read_jsonl(path: str | Path, limit: int | None = None) -> list[Any]:
    """The records of a (compressed) JSONL file (the first `limit`), as `iter_jsonl` reads them."""
    return [record for _, record in itertools.islice(iter_jsonl(path), limit)]


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".tmp")


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    """Write records as (compressed, by name) JSONL, atomically; returns the path."""
    path = Path(path)
    tmp = _tmp(path)
    with open_text(tmp, "w", compression_of(path)) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` atomically (a temporary file renamed into place); returns the path."""
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: Any, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write `data` as pretty JSON, atomically; returns the path."""
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n")
