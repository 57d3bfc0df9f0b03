"""Input readers and shard planning: JSONL (plain, .gz, .zst), Parquet, text/HTML/PDF/DOCX folders, WARC.

`plan_shards(inputs, ...)` turns paths into a deterministic list of `Shard`s, splitting inside large files:
plain JSONL by byte ranges aligned to line starts, compressed JSONL by line ranges (one counting pass; each
shard decompresses from the file start, so prefer plain JSONL or more, smaller files for very large inputs),
Parquet by row ranges (reading only the overlapping row groups), folders of .txt/.md/.html/.pdf/.docx files by
groups of files (each PDF page and DOCX section a document, hytron.data.office); WARC files are one shard each.
`read_shard(shard, ...)` yields `Document`s, or `Malformed` records for input it cannot use (bad UTF-8,
invalid JSON, missing/empty/oversized text, unreadable files): nothing is skipped silently.

A TinyWeb directory (one with `tinyweb.json`) as input means its `corpus/` folder only.
Records without an id get a stable one: `<path>@<byte offset>` or `<path>:<line/row number>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hytron.data import office
from hytron.data.document import Document, Malformed
from hytron.data.io import open_bytes

_TEXT_SUFFIXES = {".txt", ".md"}
_HTML_SUFFIXES = {".html", ".htm"}


@dataclass(frozen=True)
class Shard:
    """A unit of work: `path` in format `fmt`, items [start, end) in bytes (jsonl) or records (others)."""

    index: int
    path: str
    fmt: str  # jsonl | jsonl.gz | jsonl.zst | parquet | files | warc
    start: int
    end: int
    files: tuple[str, ...] = ()  # fmt == "files": the folder's files, sorted


def detect_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, fmt in ((".jsonl.gz", "jsonl.gz"), (".json.gz", "jsonl.gz"), (".ndjson.gz", "jsonl.gz"),
                        (".jsonl.zst", "jsonl.zst"), (".jsonl.zstd", "jsonl.zst"), (".json.zst", "jsonl.zst"),
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
            raise FileNotFoundError(f"input not found: {p}")
        if p.is_dir():
            if (p / "tinyweb.json").is_file():
                p = p / "corpus"
            files = sorted(f for f in p.rglob("*") if f.is_file() and detect_format(f))
            if not files:
                raise ValueError(f"input folder {p} has no readable files (.jsonl[.gz|.zst], .parquet, .txt, "
                                 ".md, .html, .pdf, .docx, .warc[.gz])")
            out += files
        else:
            if detect_format(p) is None:
                raise ValueError(f"input {p}: unknown format (expected .jsonl[.gz|.zst], .parquet, .txt, .md, "
                                 ".html, .pdf, .docx, .warc[.gz])")
            out.append(p)
    return out


def _count_lines(path: Path, fmt: str) -> int:
    n = 0
    try:
        with open_bytes(path) as f:
            for _ in f:
                n += 1
    except (OSError, EOFError, ValueError):  # a damaged file: read what is there, report the rest at read time
        pass
    return n + 1  # one more slot so a damaged tail is still reached by the last shard


def plan_shards(inputs: list[str | Path], shard_bytes: int = 2_000_000, shard_records: int = 5000) -> list[Shard]:
    """Deterministic shards for `inputs`; independent of the number of workers."""
    files = expand_inputs(inputs)
    shards: list[Shard] = []
    loose: dict[Path, list[str]] = {}
    for f in files:
        fmt = detect_format(f)
        if fmt == "file":
            loose.setdefault(f.parent, []).append(str(f))
            continue
        if fmt == "jsonl":
            size = f.stat().st_size
            ranges = [(s, min(s + shard_bytes, size)) for s in range(0, max(size, 1), shard_bytes)]
        elif fmt in ("jsonl.gz", "jsonl.zst"):
            n = _count_lines(f, fmt)
            ranges = [(s, min(s + shard_records, n)) for s in range(0, n, shard_records)]
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
        group = sorted(loose[folder])
        for s in range(0, len(group), shard_records):
            part = tuple(group[s:s + shard_records])
            shards.append(Shard(len(shards), str(folder), "files", 0, len(part), part))
    return shards


# ---- reading -----------------------------------------------------------------------------------------------


def _record(obj, pos_id: str, path: str, text_field: str, id_field: str, source_field: str,
            default_source: str, raw: str, max_bytes: int) -> Document | Malformed:
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
        return Malformed(doc_id, source, "oversized", raw, f"over {max_bytes} bytes")
    meta = {k: v for k, v in obj.items() if k not in (text_field, id_field, source_field)}
    return Document(doc_id, text, source, meta)


def _source_of(path: str) -> str:
    name = Path(path).name
    return name.split(".")[0] or name


def _jsonl_lines(shard: Shard) -> Iterator[tuple[str, bytes]]:
    """(position id, raw line) for each line of the shard; a damaged file ends with ('', error message)."""
    path = Path(shard.path)
    if shard.fmt == "jsonl":
        with path.open("rb") as f:
            if shard.start > 0:
                f.seek(shard.start - 1)
                f.readline()  # finish the line that started before this shard (it belongs to the previous one)
            while (pos := f.tell()) < shard.end:
                line = f.readline()
                if not line:
                    break
                yield f"{shard.path}@{pos}", line
        return
    nxt = 0  # index of the next line to read
    try:
        with open_bytes(path) as f:
            for line in f:
                if nxt >= shard.end:
                    break
                if nxt >= shard.start:
                    yield f"{shard.path}:{nxt}", line
                nxt += 1
    except (OSError, EOFError, ValueError) as e:  # truncated or corrupt compressed stream
        if shard.start <= nxt < shard.end:  # the damage sits in this shard's range: report it here, once
            yield "", f"{type(e).__name__}: {e}".encode()


def _read_jsonl(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    default_source = _source_of(shard.path)
    for pos_id, line in _jsonl_lines(shard):
        if pos_id == "":
            yield Malformed(f"{shard.path}:damaged", default_source, "unreadable_file", "", line.decode())
            continue
        stripped = line.strip()
        if not stripped:
            continue  # blank separator lines carry no document
        try:
            raw = stripped.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Malformed(pos_id, default_source, "invalid_utf8", stripped.decode("utf-8", "backslashreplace"),
                            str(e))
            continue
        if len(stripped) > cfg.max_doc_bytes * 2:  # do not even parse a runaway line
            yield Malformed(pos_id, default_source, "oversized", raw, f"line over {2 * cfg.max_doc_bytes} bytes")
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            yield Malformed(pos_id, default_source, "invalid_json", raw, str(e))
            continue
        yield _record(obj, pos_id, shard.path, cfg.text_field, cfg.id_field, cfg.source_field, default_source,
                      raw, cfg.max_doc_bytes)


def _read_parquet(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    default_source = _source_of(shard.path)
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(shard.path)
        groups, first, row = [], None, 0  # read only the row groups that overlap [start, end)
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row < shard.end and row + n > shard.start:
                groups.append(g)
                first = row if first is None else first
            row += n
        table = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
        rows = table.slice(shard.start - (first or 0), shard.end - shard.start).to_pylist()
    except Exception as e:  # noqa: BLE001 - any damage: one counted record, not a crash
        yield Malformed(f"{shard.path}:{shard.start}", default_source, "unreadable_file", "",
                        f"{type(e).__name__}: {e}")
        return
    for i, row in enumerate(rows):
        yield _record(row, f"{shard.path}:{shard.start + i}", shard.path, cfg.text_field, cfg.id_field,
                      cfg.source_field, default_source, json.dumps(row, default=str)[:10_000], cfg.max_doc_bytes)


def html_to_text(html: str, main_content: bool = True) -> str:
    """Visible main text of an HTML page (Resiliparse; navigation and footers dropped when main_content)."""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, main_content=main_content)


def _decode(data: bytes, pos_id: str, source: str) -> str | Malformed:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Malformed(pos_id, source, "invalid_utf8", data.decode("utf-8", "backslashreplace"), str(e))


def _read_files(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    source = Path(shard.path).name
    for f in shard.files:
        if Path(f).suffix.lower() in office.SUFFIXES:
            yield from _read_office(f, shard.path, source, cfg)
            continue
        try:
            data = Path(f).read_bytes()
        except OSError as e:
            yield Malformed(f, source, "unreadable_file", "", str(e))
            continue
        text = _decode(data, f, source)
        if isinstance(text, Malformed):
            yield text
            continue
        meta = {"path": f}
        if Path(f).suffix.lower() in _HTML_SUFFIXES:
            meta["html_bytes"] = len(data)
            text = html_to_text(text, cfg.html_main_content)
        obj = {"id": str(Path(f).relative_to(shard.path)), "text": text, "source": source, **meta}
        yield _record(obj, f, f, "text", "id", "source", source, text[:10_000], cfg.max_doc_bytes)


def _read_office(f: str, folder: str, source: str, cfg) -> Iterator[Document | Malformed]:
    """Each page (PDF) or section (DOCX) of `f` a document with the source path in meta; a file that cannot
    be read is one counted `unreadable_file` record after whatever pages came before the damage."""
    base = str(Path(f).relative_to(folder))
    try:
        for suffix, text, meta in office.READERS[Path(f).suffix.lower()](f):
            obj = {"id": f"{base}#{suffix}", "text": text, "source": source, "path": f, **meta}
            yield _record(obj, f"{f}#{suffix}", f, "text", "id", "source", source, text[:10_000], cfg.max_doc_bytes)
    except Exception as e:  # noqa: BLE001 - damaged, encrypted or unsupported files are counted, never fatal
        yield Malformed(f"{base}#unreadable", source, "unreadable_file", "", f"{f}: {type(e).__name__}: {e}")


def _read_warc(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    source = _source_of(shard.path)
    try:
        stream = open(shard.path, "rb")  # noqa: SIM115 - closed below; ArchiveIterator reads lazily
    except OSError as e:
        yield Malformed(shard.path, source, "unreadable_file", "", str(e))
        return
    n = 0
    try:
        for n, rec in enumerate(ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=True)):
            rec_id = rec.record_id or f"{shard.path}:{n}"
            url = rec.headers.get("WARC-Target-URI", "")
            ctype = (rec.http_headers.get("Content-Type", "") if rec.http_headers else "").lower()
            body = rec.reader.read()
            if "html" not in ctype:
                yield Malformed(rec_id, source, "not_html", body[:2000].decode("utf-8", "replace"), ctype)
                continue
            html = body.decode("utf-8", "replace")
            text = html_to_text(html, cfg.html_main_content)
            obj = {"id": rec_id, "text": text, "source": source, "url": url}
            yield _record(obj, rec_id, shard.path, "text", "id", "source", source, html[:10_000], cfg.max_doc_bytes)
    except Exception as e:  # noqa: BLE001 - a damaged archive ends the shard with a counted record
        yield Malformed(f"{shard.path}:{n}:damaged", source, "unreadable_file", "", f"{type(e).__name__}: {e}")
    finally:
        stream.close()


_READERS = {"jsonl": _read_jsonl, "jsonl.gz": _read_jsonl, "jsonl.zst": _read_jsonl, "parquet": _read_parquet,
            "files": _read_files, "warc": _read_warc}


def read_shard(shard: Shard, cfg) -> Iterator[Document | Malformed]:
    """Documents (or Malformed records) of one shard, in file order. `cfg` is an `InputConfig`."""
    yield from _READERS[shard.fmt](shard, cfg)
