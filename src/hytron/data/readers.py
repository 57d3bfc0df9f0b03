"""Input readers and shard planning: JSONL (plain, .gz, .zst, .bz2, .xz), Parquet, text/HTML/PDF/DOCX folders, WARC.

`plan_shards(inputs, ...)` turns paths into a deterministic list of `Shard`s, splitting inside large files:
plain JSONL by byte ranges whose ends are moved to line starts while planning (one forward scan, so a 1 GB
line is one shard and no shard re-reads another's bytes), compressed JSONL by line ranges of at most
`shard_records` lines and about `shard_bytes` (one counting pass; `read_shards` then reads all shards of one
file in one more pass: decompressed twice, not once per shard), Parquet by row ranges (reading only the
overlapping row groups), folders of .txt/.md/.html/.pdf/.docx files by groups of at most `shard_records` files
and about `shard_bytes` on disk (each PDF page and DOCX section a document, hytron.data.office); WARC files are
one shard each.
`read_shard(shard, ...)` yields `Document`s, or `Malformed` records for input it cannot use (bad UTF-8,
invalid JSON, missing/empty/oversized text, decompression bombs, unreadable files): nothing is skipped silently.

Memory is bounded by the caps in `InputConfig`, never by the input: lines are read at most `6 * max_doc_bytes`
at a time (a longer one is skipped in 1 MiB steps and becomes an `oversized` record with its size), whole files
are read only when `stat` says they fit, compressed input stops at `max_inflate_bytes` or `max_inflate_ratio`,
and a DOCX is checked entry by entry before python-docx opens it. File names need not be UTF-8: ids, sources
and paths in records show their undecodable bytes as `\\xNN` (hytron.data.io.display_path).

A TinyWeb directory (one with `tinyweb.json`) as input means its `corpus/` folder only.
Records without an id get a stable one: `<path>@<byte offset>` or `<path>:<line/row number>`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hytron.data import office
from hytron.data.curate_config import InputConfig
from hytron.data.document import Document, Malformed
from hytron.data.io import DecompressionBomb, display_path, open_bytes

COMPRESSED_FORMATS = ("jsonl.gz", "jsonl.zst", "jsonl.bz2", "jsonl.xz")
_TEXT_SUFFIXES = {".txt", ".md"}
_HTML_SUFFIXES = {".html", ".htm"}
_HEAD = 1000  # bytes of an oversized record kept as its `raw` in removed/
_TO_END = 2**62  # the end of a compressed file's last shard: every line after its start, however many
_STEP = 1 << 20  # bytes read per step while skipping an oversized line or scanning for line starts


@dataclass(frozen=True)
class Shard:
    """A unit of work: `path` in format `fmt`, items [start, end) in bytes (jsonl) or records (others)."""

    index: int
    path: str
    fmt: str  # jsonl | jsonl.gz | jsonl.zst | jsonl.bz2 | jsonl.xz | parquet | files | warc
    start: int
    end: int
    files: tuple[str, ...] = ()  # fmt == "files": the folder's files, sorted


def detect_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, fmt in ((".jsonl.gz", "jsonl.gz"), (".json.gz", "jsonl.gz"), (".ndjson.gz", "jsonl.gz"),
                        (".jsonl.zst", "jsonl.zst"), (".jsonl.zstd", "jsonl.zst"), (".json.zst", "jsonl.zst"),
                        (".jsonl.bz2", "jsonl.bz2"), (".json.bz2", "jsonl.bz2"), (".jsonl.xz", "jsonl.xz"),
                        (".json.xz", "jsonl.xz"),
                        (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".parquet", "parquet"),
                        (".warc.gz", "warc"), (".warc", "warc")):
        if name.endswith(suffix):
            return fmt
    if path.suffix.lower() in _TEXT_SUFFIXES | _HTML_SUFFIXES | office.SUFFIXES:
        return "file"
    return None


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files to read, sorted within each input; a TinyWeb directory contributes its corpus/ only."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"input not found: {display_path(p)}")
        if p.is_dir():
            if (p / "tinyweb.json").is_file():
                p = p / "corpus"
            files = sorted(f for f in p.rglob("*") if f.is_file() and detect_format(f))
            if not files:
                raise ValueError(f"input folder {display_path(p)} has no readable files (.jsonl[.gz|.zst|.bz2|.xz], "
                                 ".parquet, .txt, .md, .html, .pdf, .docx, .warc[.gz])")
            out += files
        else:
            if detect_format(p) is None:
                raise ValueError(f"input {display_path(p)}: unknown format (expected .jsonl[.gz|.zst|.bz2|.xz], "
                                 ".parquet, .txt, .md, .html, .pdf, .docx, .warc[.gz])")
            out.append(p)
    return out


def _line_ranges(path: Path, shard_bytes: int, shard_records: int, cfg) -> list[tuple[int, int]]:
    """Line ranges of a compressed file, each at most `shard_records` lines and about `shard_bytes` inflated (a
    shard is held in memory while staged), from one pass under the inflate caps reading lines at most the line
    cap at a time. Damage or a bomb ends the count; the last range is open-ended so its shard reaches it."""
    starts, n, size, cap = [0], 0, 0, _line_cap(cfg)  # first line of each range; lines seen; bytes in the range
    try:
        with open_bytes(path, max_output=cfg.max_inflate_bytes, max_ratio=cfg.max_inflate_ratio) as f:
            while (line := _next_line(f, cap))[1] >= 0:
                n += 1
                size += line[1] + 1
                if n - starts[-1] >= shard_records or size >= shard_bytes:
                    starts.append(n)
                    size = 0
    except (OSError, EOFError, ValueError):  # damage or a bomb: range what is there, report it at read time
        pass
    if len(starts) > 1 and starts[-1] == n:  # no line after the last cut
        starts.pop()
    return list(zip(starts, [*starts[1:], _TO_END], strict=True))


def _line_aligned_ranges(path: Path, size: int, shard_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of about `shard_bytes` that start at line starts: each boundary is the first line start at
    or after the previous boundary + shard_bytes, found by one forward scan (every byte looked at once at most)."""
    starts = [0]
    with path.open("rb") as f:
        while starts[-1] + shard_bytes < size:
            pos = starts[-1] + shard_bytes - 1  # a line starts at `pos + 1` if byte `pos` is a newline
            f.seek(pos)
            newline = None
            while newline is None and (chunk := f.read(_STEP)):
                i = chunk.find(b"\n")
                newline, pos = (pos + i, pos) if i >= 0 else (None, pos + len(chunk))
            if newline is None or newline + 1 >= size:
                break
            starts.append(newline + 1)
    return list(zip(starts, [*starts[1:], max(size, 1)], strict=True))


def plan_shards(inputs: list[str | Path], shard_bytes: int = 2_000_000, shard_records: int = 5000,
                cfg: InputConfig | None = None) -> list[Shard]:
    """Deterministic shards for `inputs`; independent of the number of workers. With `cfg` (an InputConfig),
    compressed files are ranged under its inflate and line caps (a bomb stops the count; its shard reports it)."""
    cfg = cfg if cfg is not None else InputConfig()
    files = expand_inputs(inputs)
    shards: list[Shard] = []
    loose: dict[Path, list[str]] = {}
    for f in files:
        fmt = detect_format(f)
        if fmt == "file":
            loose.setdefault(f.parent, []).append(str(f))
            continue
        if fmt == "jsonl":
            try:
                ranges = _line_aligned_ranges(f, f.stat().st_size, shard_bytes)
            except OSError:  # unreadable: one shard that reports it
                ranges = [(0, 1)]
        elif fmt in COMPRESSED_FORMATS:
            ranges = _line_ranges(f, shard_bytes, shard_records, cfg)
        elif fmt == "parquet":
            try:
                import pyarrow.parquet as pq

                n = pq.ParquetFile(f).metadata.num_rows
            except Exception:  # noqa: BLE001 - unreadable file: one shard that reports it
                n = 1
            ranges = [(s, min(s + shard_records, n)) for s in range(0, max(n, 1), shard_records)]
        else:  # warc: records are not addressable without an index; one shard per file
            ranges = [(0, 1)]
        shards += [Shard(len(shards) + i, str(f), fmt, s, e) for i, (s, e) in enumerate(ranges)]
    for folder in sorted(loose):
        for part in _file_groups(sorted(loose[folder]), shard_bytes, shard_records):
            shards.append(Shard(len(shards), str(folder), "files", 0, len(part), part))
    return shards


def _file_groups(files: list[str], shard_bytes: int, shard_records: int) -> Iterator[tuple[str, ...]]:
    """Consecutive groups of at most `shard_records` files and about `shard_bytes` on disk (a larger file is a
    group of its own): a shard's documents are held together while it is staged, so its bytes are bounded too."""
    group: list[str] = []
    size = 0
    for f in files:
        try:
            n = os.stat(f).st_size
        except OSError:  # reported when read
            n = 0
        if group and (len(group) >= shard_records or size + n > shard_bytes):
            yield tuple(group)
            group, size = [], 0
        group.append(f)
        size += n
    if group:
        yield tuple(group)


# ---- reading -----------------------------------------------------------------------------------------------


def _record(obj, pos_id: str, path: str, text_field: str, id_field: str, source_field: str,
            default_source: str, raw: str, max_bytes: int) -> Document | Malformed:
    item = _record_of(obj, pos_id, text_field, id_field, source_field, default_source, raw, max_bytes)
    if isinstance(item, Malformed):
        item.path = display_path(path)
    return item


def _record_of(obj, pos_id: str, text_field: str, id_field: str, source_field: str, default_source: str, raw: str,
               max_bytes: int) -> Document | Malformed:
    if not isinstance(obj, dict):
        return Malformed(pos_id, default_source, "not_an_object", raw, f"a JSON {type(obj).__name__}")
    doc_id = obj.get(id_field)
    doc_id = str(doc_id) if doc_id not in (None, "") else pos_id
    source = obj.get(source_field) if isinstance(obj.get(source_field), str) else default_source
    text = obj.get(text_field)
    if not isinstance(text, str):
        detail = f"field {text_field!r} missing" if text is None else f"{text_field!r} is {type(text).__name__}"
        return Malformed(doc_id, source, "missing_text", raw, detail)
    if not text.strip():
        return Malformed(doc_id, source, "empty_text", raw)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # lone surrogates from JSON escapes such as "\ud800"
        return Malformed(doc_id, source, "invalid_unicode", raw.encode("utf-8", "backslashreplace").decode(), str(e))
    if size > max_bytes:
        return Malformed(doc_id, source, "oversized", raw[:_HEAD], f"text of {size} bytes, over input.max_doc_bytes="
                         f"{max_bytes}", size=size)
    meta = {k: v for k, v in obj.items() if k not in (text_field, id_field, source_field)}
    return Document(doc_id, text, source, meta)


def _source_of(path: str) -> str:
    name = display_path(Path(path).name)
    return name.split(".")[0] or name


def _line_cap(cfg) -> int:
    """The longest JSONL line parsed: a max_doc_bytes text with every character JSON-escaped (6 bytes)."""
    return 6 * cfg.max_doc_bytes + 65_536


def _next_line(f: IO[bytes], cap: int) -> tuple[bytes, int]:
    """(the next line, its size without the newline), holding at most cap + 1 bytes: a longer line is skipped
    in `_STEP` steps and returned as its first `_HEAD` bytes with its full size (> cap). (b"", -1) at the end."""
    line = f.readline(cap + 1)
    if not line:
        return b"", -1
    if line.endswith(b"\n"):
        return line, len(line) - 1
    if len(line) <= cap:  # the last line, without a newline
        return line, len(line)
    head, size = line[:_HEAD], len(line)
    while chunk := f.readline(_STEP):
        if chunk.endswith(b"\n"):
            return head, size + len(chunk) - 1
        size += len(chunk)
    return head, size


def _jsonl_lines(shard: Shard, cfg) -> Iterator[tuple[str, bytes, int, str]]:
    """(position id, raw line or its head, size, problem) for each line of the shard, problem "" for a line
    to parse or "oversized"; a damaged file ends with ("", message, -1, "unreadable_file" or
    "decompression_bomb")."""
    if shard.fmt != "jsonl":
        for _, *line in _compressed_lines([shard], cfg):
            yield tuple(line)
        return
    shown, cap = display_path(shard.path), _line_cap(cfg)
    try:
        with Path(shard.path).open("rb") as f:
            if shard.start > 0:
                f.seek(shard.start - 1)
                if f.read(1) != b"\n":  # a plan from before line-aligned ranges: this line is the previous
                    _next_line(f, 0)  # shard's; skip it (in steps, never held)
            while (pos := f.tell()) < shard.end:
                line, size = _next_line(f, cap)
                if size < 0:
                    break
                yield f"{shown}@{pos}", line, size, "oversized" if size > cap else ""
    except OSError as e:
        yield "", display_path(f"{type(e).__name__}: {e}").encode(), -1, "unreadable_file"


def _compressed_lines(shards: list[Shard], cfg) -> Iterator[tuple[int, str, bytes, int, str]]:
    """(k, position id, line, size, problem) for the line ranges `shards` (ascending, all of one compressed
    file) in one pass, k the shard's position in `shards`; damage ends it with (k, "", message, -1, reason),
    reported by the shard whose range it falls in."""
    path, shown, cap = shards[0].path, display_path(shards[0].path), _line_cap(cfg)
    k = nxt = 0  # the shard being read, the index of the next line
    try:
        with open_bytes(path, max_output=cfg.max_inflate_bytes, max_ratio=cfg.max_inflate_ratio) as f:
            while True:
                while k < len(shards) and nxt >= shards[k].end:
                    k += 1
                if k == len(shards):
                    return
                line, size = _next_line(f, cap)
                if size < 0:
                    return
                if nxt >= shards[k].start:
                    yield k, f"{shown}:{nxt}", line, size, "oversized" if size > cap else ""
                nxt += 1
    except (OSError, EOFError, ValueError) as e:  # unreadable, truncated, corrupt, or a bomb
        if k < len(shards) and shards[k].start <= nxt:
            reason = "decompression_bomb" if isinstance(e, DecompressionBomb) else "unreadable_file"
            message = str(e) if reason == "decompression_bomb" else f"{type(e).__name__}: {e}"
            yield k, "", display_path(message).encode(), -1, reason


def _parse_line(shard: Shard, cfg, pos_id: str, line: bytes, size: int, problem: str) -> Document | Malformed | None:
    """The record of one JSONL line (None for a blank one)."""
    default_source = _source_of(shard.path)
    if pos_id == "":
        shown = display_path(shard.path)
        suffix = "bomb" if problem == "decompression_bomb" else "damaged"
        return Malformed(f"{shown}:{suffix}", default_source, problem, "", line.decode(), path=shown)
    if problem == "oversized":  # never parsed: only its head was kept
        return Malformed(pos_id, default_source, "oversized", line.decode("utf-8", "replace"),
                         f"line of {size} bytes, over the {_line_cap(cfg)}-byte line cap (6 x input.max_doc_bytes"
                         " + 64 KiB)", size=size)
    stripped = line.strip()
    if not stripped:
        return None  # blank separator lines carry no document
    try:
        raw = stripped.decode("utf-8")
    except UnicodeDecodeError as e:
        return Malformed(pos_id, default_source, "invalid_utf8", stripped.decode("utf-8", "backslashreplace"),
                         str(e))
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        return Malformed(pos_id, default_source, "invalid_json", raw, str(e))
    return _record(obj, pos_id, shard.path, cfg.text_field, cfg.id_field, cfg.source_field, default_source,
                   raw, cfg.max_doc_bytes)


def _read_jsonl(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    for line in _jsonl_lines(shard, cfg):
        item = _parse_line(shard, cfg, *line)
        if item is not None:
            yield item


def _read_parquet(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    """Rows [start, end) of the overlapping row groups, decoded 64 rows at a time (a shard's rows were one table
    and one list of dicts). A row group whose declared size is over the line cap per row, or over
    input.max_inflate_bytes, is one `oversized` record, never decoded."""
    default_source, shown, cap = _source_of(shard.path), display_path(shard.path), _line_cap(cfg)
    row, pos = 0, shard.start  # the first row of row group g; the next row to yield
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(shard.path)
        for g in range(pf.metadata.num_row_groups):
            meta = pf.metadata.row_group(g)
            lo, hi = max(shard.start, row), min(shard.end, row + meta.num_rows)
            if lo < hi and (meta.total_byte_size > max(meta.num_rows, 1) * cap
                            or meta.total_byte_size > cfg.max_inflate_bytes):
                yield Malformed(f"{shown}:{lo}-{hi - 1}", default_source, "oversized", "",
                                f"row group {g} declares {meta.total_byte_size} bytes for {meta.num_rows} rows "
                                f"(the cap is {cap} per row and input.max_inflate_bytes in all)",
                                size=meta.total_byte_size, path=shown)
                pos = hi
            elif lo < hi:
                first = row  # the row index of the batch's first row
                for batch in pf.iter_batches(batch_size=64, row_groups=[g], use_threads=False):
                    a, b = max(lo, first), min(hi, first + batch.num_rows)
                    for i, rec in enumerate(batch.slice(a - first, b - a).to_pylist() if a < b else []):
                        pos = a + i + 1
                        yield _record(rec, f"{shown}:{a + i}", shard.path, cfg.text_field, cfg.id_field,
                                      cfg.source_field, default_source, json.dumps(rec, default=str)[:10_000],
                                      cfg.max_doc_bytes)
                    first += batch.num_rows
                    if first >= hi:
                        break
            row += meta.num_rows
            if row >= shard.end:
                break
    except Exception as e:  # noqa: BLE001 - any damage: one counted record after the rows before it, not a crash
        yield Malformed(f"{shown}:{pos}" + (":damaged" if pos > shard.start else ""), default_source,
                        "unreadable_file", "", display_path(f"{type(e).__name__}: {e}"), path=shown)


def html_to_text(html: str, main_content: bool = True) -> str:
    """Visible main text of an HTML page (Resiliparse; navigation and footers dropped when main_content)."""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, main_content=main_content)


def _decode(data: bytes, pos_id: str, source: str) -> str | Malformed:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        # the head only: backslash escapes make a binary file up to 4x its size as text
        return Malformed(pos_id, source, "invalid_utf8", data[:10_000].decode("utf-8", "backslashreplace"), str(e),
                         size=len(data))


def _oversized_file(f: str, shown: str, source: str, size: int, cap: int, field: str) -> Malformed:
    try:
        with open(f, "rb") as fh:
            head = fh.read(_HEAD).decode("utf-8", "replace")
    except OSError:
        head = ""
    return Malformed(shown, source, "oversized", head, f"file of {size} bytes, over the {cap}-byte cap ({field})",
                     size=size, path=shown)


def _read_files(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    source = display_path(Path(shard.path).name)
    for f in shard.files:
        shown, suffix = display_path(f), Path(f).suffix.lower()
        # whole files are read, so their size is checked first (stat, then a capped read in case it grew)
        cap, field = ((cfg.max_doc_bytes, "input.max_doc_bytes") if suffix in _TEXT_SUFFIXES
                      else (cfg.max_file_bytes, "input.max_file_bytes"))
        try:
            size = os.stat(f).st_size
            if size > cap:
                yield _oversized_file(f, shown, source, size, cap, field)
                continue
            if suffix in office.SUFFIXES:
                yield from _read_office(f, shard.path, source, cfg)
                continue
            with open(f, "rb") as fh:
                data = fh.read(cap + 1)
        except OSError as e:
            yield Malformed(shown, source, "unreadable_file", "", display_path(str(e)), path=shown)
            continue
        if len(data) > cap:
            yield _oversized_file(f, shown, source, len(data), cap, field)
            continue
        text = _decode(data, shown, source)
        if isinstance(text, Malformed):
            text.path = shown
            yield text
            continue
        meta = {"path": shown}
        if suffix in _HTML_SUFFIXES:
            meta["html_bytes"] = len(data)
            text = html_to_text(text, cfg.html_main_content)
        obj = {"id": display_path(Path(f).relative_to(shard.path)), "text": text, "source": source, **meta}
        yield _record(obj, shown, shown, "text", "id", "source", source, text[:10_000], cfg.max_doc_bytes)


def _read_office(f: str, folder: str, source: str, cfg) -> Iterator[Document | Malformed]:
    """Each page (PDF) or section (DOCX) of `f` a document with the source path in meta; a file that cannot
    be read is one counted `unreadable_file` record after whatever pages came before the damage, and a DOCX
    over its inflate caps one `decompression_bomb` record."""
    base, shown = display_path(Path(f).relative_to(folder)), display_path(f)
    try:
        for suffix, text, meta in office.READERS[Path(f).suffix.lower()](f, cfg.max_file_bytes,
                                                                          cfg.max_zip_entry_bytes):
            obj = {"id": f"{base}#{suffix}", "text": text, "source": source, "path": shown, **meta}
            yield _record(obj, f"{shown}#{suffix}", shown, "text", "id", "source", source, text[:10_000],
                          cfg.max_doc_bytes)
    except DecompressionBomb as e:
        yield Malformed(f"{base}#bomb", source, "decompression_bomb", "", display_path(f"{shown}: {e}"), path=shown)
    except Exception as e:  # noqa: BLE001 - damaged, encrypted or unsupported files are counted, never fatal
        yield Malformed(f"{base}#unreadable", source, "unreadable_file", "",
                        display_path(f"{f}: {type(e).__name__}: {e}"), path=shown)


def _read_warc(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    source = _source_of(shard.path)
    try:
        stream = open(shard.path, "rb")  # noqa: SIM115 - closed below; ArchiveIterator reads lazily
    except OSError as e:
        yield Malformed(display_path(shard.path), source, "unreadable_file", "", display_path(str(e)))
        return
    n = 0
    try:
        for n, rec in enumerate(ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=True)):
            rec_id = rec.record_id or f"{display_path(shard.path)}:{n}"
            url = rec.headers.get("WARC-Target-URI", "")
            ctype = (rec.http_headers.get("Content-Type", "") if rec.http_headers else "").lower()
            body = rec.reader.read(cfg.max_file_bytes + 1)  # the rest of a longer body is skipped, not held
            if len(body) > cfg.max_file_bytes:
                yield Malformed(rec_id, source, "oversized", body[:_HEAD].decode("utf-8", "replace"),
                                f"record body over input.max_file_bytes={cfg.max_file_bytes}",
                                size=rec.content_length)
                continue
            if "html" not in ctype:
                yield Malformed(rec_id, source, "not_html", body[:2000].decode("utf-8", "replace"), ctype)
                continue
            html = body.decode("utf-8", "replace")
            text = html_to_text(html, cfg.html_main_content)
            obj = {"id": rec_id, "text": text, "source": source, "url": url}
            yield _record(obj, rec_id, shard.path, "text", "id", "source", source, html[:10_000], cfg.max_doc_bytes)
    except Exception as e:  # noqa: BLE001 - a damaged archive ends the shard with a counted record
        yield Malformed(f"{display_path(shard.path)}:{n}:damaged", source, "unreadable_file", "",
                        display_path(f"{type(e).__name__}: {e}"))
    finally:
        stream.close()


_READERS = {"jsonl": _read_jsonl, "jsonl.gz": _read_jsonl, "jsonl.zst": _read_jsonl, "jsonl.bz2": _read_jsonl,
            "jsonl.xz": _read_jsonl, "parquet": _read_parquet, "files": _read_files, "warc": _read_warc}


def read_shard(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    """Documents (or Malformed records) of one shard, in file order. `cfg` is an `InputConfig`."""
    yield from _READERS[shard.fmt](shard, cfg)


def read_shards(shards: list[Shard], cfg) -> Iterator[tuple[int, Document | Malformed]]:
    """(position in `shards`, record) for several shards in order. Consecutive shards of one compressed file
    are read in one pass: read alone, each would decompress the file from its start (a 1 GB .gz in 200 shards
    was 100 GB of decompression)."""
    i = 0
    while i < len(shards):
        j = i + 1
        if shards[i].fmt in COMPRESSED_FORMATS:
            while j < len(shards) and (shards[j].path, shards[j].fmt) == (shards[i].path, shards[i].fmt):
                j += 1
            for k, *line in _compressed_lines(shards[i:j], cfg):
                item = _parse_line(shards[i + k], cfg, *line)
                if item is not None:
                    yield i + k, item
        else:
            for item in read_shard(shards[i], cfg):
                yield i, item
        i = j


def one_pass_groups(shards: list[Shard]) -> list[list[int]]:
    """Shard indices grouped so that each group is read with `read_shards` in one pass: all shards of one
    compressed file together, every other shard alone."""
    groups: list[list[int]] = []
    for s in shards:
        prev = shards[groups[-1][-1]] if groups else None
        if prev is not None and s.fmt in COMPRESSED_FORMATS and (prev.path, prev.fmt) == (s.path, s.fmt):
            groups[-1].append(s.index)
        else:
            groups.append([s.index])
    return groups
