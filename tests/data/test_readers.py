"""Readers: every format reads the same documents, sharding inside files loses and repeats nothing,
malformed input becomes counted records instead of crashes."""

from __future__ import annotations

import gzip
import json

import pytest

from hytron.data.curate_config import CurateConfig, InputConfig
from hytron.data.document import Document, Malformed
from hytron.data.pipeline import curate
from hytron.data.readers import expand_inputs, plan_shards, read_shard
from hytron.data.writers import iter_records

GOOD = "The river flows past the old mill. It was built in 1820 and still grinds grain. " * 3


def _docs(n):
    return [{"id": f"d{i}", "text": f"Document {i}. {GOOD}", "source": "s", "url": f"u{i}"} for i in range(n)]


def _read_all(paths, **kw):
    cfg = InputConfig(**kw)
    out = []
    for shard in plan_shards(paths, cfg.shard_bytes, cfg.shard_records):
        out += list(read_shard(shard, cfg))
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst", "parquet"])
def test_formats_read_identically_and_split_within_files(tmp_path, fmt):
    rows = _docs(300)
    path = tmp_path / f"part.{fmt}"
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "jsonl":
        path.write_bytes(lines)
    elif fmt == "jsonl.gz":
        path.write_bytes(gzip.compress(lines))
    elif fmt == "jsonl.zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(lines))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=64)  # shards cross row groups
    shards = plan_shards([path], shard_bytes=4096, shard_records=70)
    assert len(shards) > 3  # one file, several shards
    docs = _read_all([path], shard_bytes=4096, shard_records=70)
    assert [d.id for d in docs] == [r["id"] for r in rows]
    assert all(isinstance(d, Document) and d.meta == {"url": f"u{i}"} for i, d in enumerate(docs))


def test_text_html_and_warc_inputs(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text(GOOD)
    (folder / "b.html").write_text(f"<html><body><nav>Home | About</nav><article><p>{GOOD}</p></article>"
                                   "<footer>Copyright</footer></body></html>")
    warc_path = tmp_path / "crawl.warc.gz"
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with warc_path.open("wb") as f:
        w = WARCWriter(f, gzip=True)
        for i, (ctype, body) in enumerate([("text/html", f"<html><body><p>{GOOD}</p></body></html>"),
                                           ("image/png", "PNGDATA")]):
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.0")
            w.write_record(w.create_warc_record(f"https://example.test/{i}", "response",
                                                payload=__import__("io").BytesIO(body.encode()),
                                                http_headers=http))
    items = _read_all([folder, warc_path])
    texts = {i.id: i for i in items}
    assert texts["a.txt"].text == GOOD
    assert "The river flows" in texts["b.html"].text and "Home | About" not in texts["b.html"].text
    warc_docs = [i for i in items if isinstance(i, Document) and i.meta.get("url", "").startswith("https://")]
    assert len(warc_docs) == 1 and "old mill" in warc_docs[0].text
    assert [i.reason for i in items if isinstance(i, Malformed)] == ["not_html"]


def test_malformed_lines_are_counted_never_crash(tmp_path):
    good = json.dumps({"id": "ok", "text": GOOD})
    lines = [good.encode(), b'{"id": "broken", "text": ', b'\xff\xfe not utf8', b'[1, 2]',
             json.dumps({"id": "notext"}).encode(), json.dumps({"id": "empty", "text": "  "}).encode(),
             json.dumps({"id": "big", "text": "x" * 5000}).encode(), b'{"id": "sur", "text": "a \\ud800 b"}',
             json.dumps({"text": GOOD}).encode()]
    path = tmp_path / "messy.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = _read_all([path], max_doc_bytes=2000)
    reasons = {i.id if isinstance(i, Document) else i.reason for i in items}
    assert reasons == {"ok", "invalid_json", "invalid_utf8", "not_an_object", "missing_text", "empty_text",
                       "oversized", "invalid_unicode", f"{path}@{sum(len(x) + 1 for x in lines[:-1])}"}
    assert len(items) == len(lines)


def test_damaged_files_become_counted_records_in_a_full_run(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    good = "".join(json.dumps(r) + "\n" for r in _docs(20)).encode()
    (inp / "a.jsonl").write_bytes(good + b"not json at all\n" + b'{"id": "s", "text": "lone \\udc80 surrogate"}\n')
    (inp / "b.jsonl.gz").write_bytes(gzip.compress(good)[:-30])  # truncated download
    (inp / "c.parquet").write_bytes(b"PAR1 this is not parquet")
    cfg = CurateConfig()
    cfg.quality.enabled = False
    cfg.executor.workers = 1
    m = curate([inp], tmp_path / "out", cfg, progress=False)
    read = m["removed_by_step"]["read"]
    assert read["invalid_json"] == 1 and read["unreadable_file"] == 2 and read["invalid_unicode"] == 1
    removed = list(iter_records(tmp_path / "out", "removed"))
    kept = list(iter_records(tmp_path / "out", "kept"))
    assert m["counts"]["input"] == len(removed) + len(kept) and m["balanced"]
    assert sum(r["id"].startswith(str(inp / "b.jsonl.gz")) for r in removed) == 1


def test_unknown_input_is_a_clear_error(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown format"):
        expand_inputs([tmp_path / "x.csv"])
    with pytest.raises(FileNotFoundError, match="input not found"):
        expand_inputs([tmp_path / "missing.jsonl"])


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_output_shards_round_trip_in_every_compression(tmp_path, compression):
    from hytron.data.writers import ShardWriter

    w = ShardWriter(tmp_path, "kept", 3, compression)
    rows = [{"id": str(i), "text": f"héllo {i}", "source": "s", "quality_bucket": i % 5} for i in range(50)]
    for r in rows:
        w.write(r)
    assert not w.path.exists()  # only visible once complete
    w.close()
    assert w.path.name == {"none": "part-00003.jsonl", "gzip": "part-00003.jsonl.gz",
                           "zstd": "part-00003.jsonl.zst"}[compression]
    assert list(iter_records(tmp_path, "kept")) == rows


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
@pytest.mark.parametrize("cut", [10, 400])
def test_truncated_compressed_input_is_recorded_as_damage(tmp_path, fmt, cut):
    """Issue 16: a cut-off .jsonl.zst read as "0 in" (or a partial count) with no damage record, unlike gzip.
    Every line that could be read is a document, and the cut is one `unreadable_file` record naming it."""
    import zstandard

    good = "".join(json.dumps(r) + "\n" for r in _docs(200)).encode()
    blob = gzip.compress(good) if fmt == "jsonl.gz" else zstandard.ZstdCompressor().compress(good)
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(blob[:-cut])
    items = _read_all([path], shard_records=70)
    damaged = [i for i in items if isinstance(i, Malformed)]
    assert [d.reason for d in damaged] == ["unreadable_file"]
    assert "truncated" in damaged[0].detail.lower() or "eof" in damaged[0].detail.lower()
    docs = [i for i in items if isinstance(i, Document)]
    assert [d.id for d in docs] == [f"d{i}" for i in range(len(docs))]  # a prefix, in order, nothing repeated


def test_multi_frame_zst_reads_every_frame(tmp_path):
    import zstandard

    rows = _docs(90)
    frames = [zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in rows[s:s + 30]).encode())
              for s in (0, 30, 60)]
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(b"".join(frames))  # what `cat a.zst b.zst` or pzstd produces
    assert [d.id for d in _read_all([path], shard_records=40)] == [r["id"] for r in rows]


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_corrupt_compressed_input_is_recorded_never_fatal(tmp_path, fmt):
    import zstandard

    good = "".join(json.dumps(r) + "\n" for r in _docs(300)).encode()
    blob = bytearray(gzip.compress(good) if fmt == "jsonl.gz" else zstandard.ZstdCompressor().compress(good))
    for k in range(len(blob) // 2, len(blob) // 2 + 20):  # flipped bits in the middle of the stream
        blob[k] ^= 0x5A
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"bad.{fmt}").write_bytes(bytes(blob))
    cfg = CurateConfig()
    cfg.quality.enabled = False
    cfg.executor.workers = 1
    m = curate([tmp_path / "in"], tmp_path / "out", cfg, progress=False)
    assert m["removed_by_step"]["read"]["unreadable_file"] == 1 and m["balanced"]
