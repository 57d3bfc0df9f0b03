"""One home for the file I/O every stage shares: (compressed) JSONL and atomic text/JSON writes. No torch.

Compression follows the file name (`.gz` gzip, `.zst`/`.zstd` zstandard, `.bz2`, `.xz`, anything else plain)
unless a caller names it. Reading untrusted compressed input can be bounded: `open_bytes(..., max_output=,
max_ratio=)` raises `DecompressionBomb` once a file inflates past a byte cap or past a ratio of the compressed
bytes consumed, and every decompressor here produces output in bounded steps, so a 164 KB file that inflates to
5 GB costs a few MB of memory before it is refused. Writes go to `NAME.tmp` and are renamed into place, so a
reader never sees half a file; JSON writes escape what UTF-8 cannot hold (a file name's undecodable bytes).
"""

from __future__ import annotations

import bz2
import gzip
import io
import itertools
import json
import lzma
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

COMPRESSIONS = ("none", "gzip", "zstd", "bz2", "xz")
RATIO_FLOOR = 16 * 2**20  # the ratio cap applies once a file has inflated this far: small files may compress well
_ZSTD_STEP = 256  # compressed bytes fed per zstd call: <= 256/4 RLE blocks of 128 KiB = 8 MiB out per call


class DecompressionBomb(ValueError):
    """A compressed input inflated past its output cap or ratio cap; the message names the cap."""


def compression_of(path: str | Path) -> str:
    name = str(path).lower()
    for suffixes, kind in ((".gz", "gzip"), ((".zst", ".zstd"), "zstd"), (".bz2", "bz2"), (".xz", "xz")):
        if name.endswith(suffixes):
            return kind
    return "none"


def display_path(path: str | Path) -> str:
    """`path` as printable UTF-8 text: bytes of a non-UTF-8 file name (held by Python as surrogate escapes)
    shown as `\\xNN`, so ids, logs and JSON never fail on them; the same as `str(path)` for any UTF-8 name."""
    s = str(path)
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (e.g. from a JSON "\\ud800")
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def name_is_utf8(path: str | Path) -> bool:
    return display_path(path) == str(path)


def _zstandard():
    try:
        import zstandard
    except ImportError:
        raise ImportError("reading or writing .zst files needs zstandard: pip install 'hytron[curate]'") from None
    return zstandard


class _ZstdFrames(io.RawIOBase):
    """Decompressed bytes of a (multi-frame) .zst file that raise EOFError when the file ends inside a frame:
    zstandard's `stream_reader` just stops there, which turned a cut-off download into a silent partial read.
    Input is fed `_ZSTD_STEP` bytes at a time because `decompressobj` returns all the output of what it is fed
    (64 KiB of RLE blocks is 2 GiB); pending output is served from an offset, never re-sliced."""

    def __init__(self, raw: IO[bytes]):
        self._dctx = _zstandard().ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._error = _zstandard().ZstdError
        self._raw = raw
        self._name = getattr(raw, "name", "zstd input")
        self._in = memoryview(b"")  # compressed bytes read and not yet fed
        self._out = memoryview(b"")  # decompressed bytes not yet returned
        self._inside = False  # input was fed to the current frame and its end not seen yet

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._out):
            if not len(self._in):
                self._in = memoryview(self._raw.read(1 << 16))
                if not len(self._in):
                    if self._inside:
                        raise EOFError(f"{self._name}: zstd stream truncated (the file ends inside a frame)")
                    return 0
            step, self._in = self._in[:_ZSTD_STEP], self._in[_ZSTD_STEP:]
            try:
                self._out = memoryview(self._obj.decompress(step))
            except self._error as e:  # corrupt frame: damage the caller records, like gzip's OSError
                raise OSError(f"{self._name}: zstd stream corrupt ({e})") from e
            self._inside = not self._obj.eof
            if self._obj.eof:  # a frame ended: the rest of the input starts the next one
                rest = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
                self._in = memoryview(bytes(rest) + bytes(self._in)) if rest else self._in
        n = min(len(b), len(self._out))
        b[:n], self._out = self._out[:n], self._out[n:]
        return n


class _Bounded(io.RawIOBase):
    """The decompressed bytes of `decoded` (closing `raw` with it), refused with `DecompressionBomb` past
    `max_output` bytes or past `max_ratio` times the compressed bytes `raw` gave up (once RATIO_FLOOR are out)."""

    def __init__(self, raw: IO[bytes], decoded: IO[bytes], name: str, max_output: int | None,
                 max_ratio: float | None):
        self._raw, self._decoded, self._name = raw, decoded, name
        self._max_output, self._max_ratio = max_output, max_ratio
        self.out = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._decoded.readinto(b)
        self.out += n
        if self._max_output is not None and self.out > self._max_output:
            raise DecompressionBomb(f"{self._name}: inflates past {self._max_output} bytes "
                                    "(input.max_inflate_bytes)")
        if self._max_ratio is not None and self.out > RATIO_FLOOR:
            consumed = max(self._raw.tell(), 1)
            if self.out > self._max_ratio * consumed:
                raise DecompressionBomb(f"{self._name}: inflates over {self._max_ratio:g}x ({self.out} bytes from "
                                        f"{consumed} compressed; input.max_inflate_ratio)")
        return n

    def close(self) -> None:
        self._decoded.close()
        self._raw.close()
        super().close()


def open_bytes(path: str | Path, compression: str | None = None, *, max_output: int | None = None,
               max_ratio: float | None = None) -> IO[bytes]:
    """A binary reader of `path`, decompressing by name (or `compression`); with `max_output` / `max_ratio`
    a compressed file that inflates past them raises `DecompressionBomb` while it is read."""
    kind = compression or compression_of(path)
    if kind == "none":
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    raw = open(path, "rb")  # noqa: SIM115 - closed with the reader
    try:
        if kind == "gzip":  # gzip, bz2 and lzma readers inflate with a max_length: bounded steps
            decoded = gzip.GzipFile(fileobj=raw, mode="rb")
        elif kind == "bz2":
            decoded = bz2.BZ2File(raw, "rb")  # noqa: SIM115 - closed with the reader
        elif kind == "xz":
            decoded = lzma.LZMAFile(raw, "rb")  # noqa: SIM115 - closed with the reader
        elif kind == "zstd":
            decoded = io.BufferedReader(_ZstdFrames(raw))
        else:
            raise ValueError(f"unknown compression {kind!r}; expected one of {COMPRESSIONS}")
    except BaseException:
        raw.close()
        raise
    return io.BufferedReader(_Bounded(raw, decoded, display_path(path), max_output, max_ratio))


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
    elif kind == "bz2":
        raw = bz2.BZ2File(raw, "wb")  # noqa: SIM115 - owned by the wrapper
    elif kind == "xz":
        raw = lzma.LZMAFile(raw, "wb")  # noqa: SIM115 - owned by the wrapper
    # strict UTF-8, except that what it cannot hold (lone surrogates) is written as \uXXXX: inside a JSON
    # string that is the JSON escape of the same character, so JSONL round-trips instead of crashing the writer
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace")


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


def write_text(path: str | Path, text: str, errors: str = "strict") -> Path:
    """Write `text` atomically (a temporary file renamed into place); returns the path."""
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8", errors=errors)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: Any, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write `data` as pretty JSON, atomically; returns the path. A lone surrogate (a non-UTF-8 file name's
    byte) is written as its JSON escape, so it reads back as the same string."""
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n",
                      errors="backslashreplace")
