"""Curation bombs, scaled down: every hostile input becomes a counted removal with a reason, memory stays bounded.

The hostile pass of issue 26 used 3 GB lines, a zst inflating to 5 GB, a 1 GB single-line .jsonl, a DOCX zip
bomb and a 1 GB .txt. Here each is 48-64 MB with caps scaled down with it (`max_doc_bytes` 100 KB), and each run
happens in a subprocess under an address-space limit (RLIMIT_AS) that reports its own peak RSS: a reader that
holds a whole line, file or inflated entry shows up as tens of MB of growth, a streaming one as almost none.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import random
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

BIG = 64 * 2**20  # inflated size of each bomb (the were 1-5 GB)
GROWTH_LIMIT_MB = 40  # peak RSS growth allowed for a run over bombs of BIG bytes (holding one costs >= 64 MB)
AS_LIMIT = 3 * 2**30  # address-space cap of the child: a regression fails the test instead of the CI machine
GOOD = ("The river flows past the old mill near the village. It was built in 1820 and still grinds grain "
        "for the bakers of the valley, who buy flour there every week. ")
CFG = {"input": {"max_doc_bytes": 100_000, "shard_bytes": 1_000_000, "max_file_bytes": 4_000_000},
       "language": {"enabled": False}, "quality": {"enabled": False}, "decontam": {"enabled": False},
       "heuristics": {"enabled": False}, "dedup": {"exact": False, "fuzzy": False}, "executor": {"workers": 1}}

_CHILD = textwrap.dedent("""
    import json, resource, sys
    from hytron.config import from_dict
    from hytron.data.curate_config import CurateConfig
    from hytron.data import pipeline
    cfg = from_dict(CurateConfig, json.loads(sys.argv[3]))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    manifest = pipeline.curate([sys.argv[1]], sys.argv[2], cfg, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (peak - base) / 1024, "counts": manifest["counts"]}))
""")


def _limit():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def _curate(folder: Path, out: Path, cfg: dict | None = None) -> tuple[dict, float, list[dict]]:
    """Run curate in a capped child; returns (manifest, peak RSS growth in MB, removed records)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(out), json.dumps(cfg or CFG)],
                          capture_output=True, text=True, env=env, preexec_fn=_limit, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    from hytron.data.writers import iter_records

    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, result["growth_mb"], list(iter_records(out, "removed"))


_LETTERS = bytes(97 + b % 26 for b in range(256))


def _good_line(i: int) -> bytes:
    return json.dumps({"id": f"good{i}", "text": f"Note {i}. " + GOOD * 3}).encode() + b"\n"


def _huge_line(n: int, letters: bool = False) -> bytes:
    """One JSON line of about n bytes: 'x' repeated (inflates ~1000x) or pseudo-random letters (~1.6x)."""
    body = random.Random(0).randbytes(n).translate(_LETTERS) if letters else b"x" * n
    return b'{"id": "huge", "text": "' + body + b'"}\n'


def _by_reason(removed: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in removed:
        out.setdefault(r["removal_reason"], []).append(r)
    return out


def _assert_accounted(manifest: dict) -> None:
    """Every input file has a line in the manifest with its records: kept, or removed per reason."""
    assert manifest["balanced"]
    for entry in manifest["inputs"]:
        acc = entry["records"]
        assert acc["kept"] + sum(acc["removed"].values()) >= 1, entry


def test_gz_with_one_huge_line_is_a_counted_bomb_and_the_rest_is_kept(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    with gzip.open(folder / "a.jsonl.gz", "wb", compresslevel=1) as f:
        f.write(_good_line(0) + _huge_line(BIG) + _good_line(1))
    manifest, growth, removed = _curate(folder, tmp_path / "out")
    reasons = _by_reason(removed)
    assert list(reasons) == ["decompression_bomb"], reasons.keys()
    assert "ratio" in reasons["decompression_bomb"][0]["detail"]
    assert manifest["counts"]["kept"] == 1  # the line before the bomb; reading stops at the bomb
    assert growth < GROWTH_LIMIT_MB, growth
    _assert_accounted(manifest)


def test_huge_line_that_compresses_normally_is_oversized_with_its_size(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    with gzip.open(folder / "a.jsonl.gz", "wb", compresslevel=1) as f:
        f.write(_good_line(0) + _huge_line(BIG, letters=True) + _good_line(1))
    cfg = {**CFG, "input": {**CFG["input"], "max_inflate_ratio": 10_000}}
    manifest, growth, removed = _curate(folder, tmp_path / "out", cfg)
    reasons = _by_reason(removed)
    assert list(reasons) == ["oversized"]
    rec = reasons["oversized"][0]
    assert rec["meta"]["bytes"] == len(_huge_line(BIG, letters=True)) - 1 and str(rec["meta"]["bytes"]) in rec["detail"]
    assert len(rec["text"]) <= 2000  # the head of the line, not the line
    assert manifest["counts"]["kept"] == 2
    assert growth < GROWTH_LIMIT_MB, growth


@pytest.mark.parametrize("fmt", ["zst", "bz2", "xz"])
def test_other_compressions_are_bounded_by_ratio_and_output(tmp_path, fmt):
    folder = tmp_path / "in"
    folder.mkdir()
    data = _good_line(0) + _huge_line(BIG) + _good_line(1)
    if fmt == "zst":
        import zstandard

        blob = zstandard.ZstdCompressor(level=1).compress(data)
    else:
        blob = bz2.compress(data) if fmt == "bz2" else lzma.compress(data, preset=0)
    (folder / f"a.jsonl.{fmt}").write_bytes(blob)
    manifest, growth, removed = _curate(folder, tmp_path / "out")
    assert [r["removal_reason"] for r in removed] == ["decompression_bomb"]
    assert manifest["counts"]["kept"] == 1
    assert growth < GROWTH_LIMIT_MB, growth
    # the output cap alone (ratio check off) stops it too
    cfg = {**CFG, "input": {**CFG["input"], "max_inflate_ratio": 10**9, "max_inflate_bytes": 8 * 2**20}}
    manifest, growth, removed = _curate(folder, tmp_path / "out2", cfg)
    assert [r["removal_reason"] for r in removed] == ["decompression_bomb"]
    assert "8388608" in removed[0]["detail"]


def test_single_line_jsonl_is_planned_in_one_pass_and_read_once(tmp_path):
    from hytron.data.readers import plan_shards

    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "a.jsonl"
    path.write_bytes(_good_line(0) + _huge_line(BIG) + _good_line(1) * 3)
    t0 = time.perf_counter()
    shards = plan_shards([folder], shard_bytes=1_000_000)
    assert time.perf_counter() - t0 < 5
    # shard boundaries sit on line starts: the huge line is inside one shard, and no shard starts inside it
    assert len(shards) == 2, [(s.start, s.end) for s in shards]
    with path.open("rb") as f:
        for s in shards[1:]:
            f.seek(s.start - 1)
            assert f.read(1) == b"\n"
    t0 = time.perf_counter()
    manifest, growth, removed = _curate(folder, tmp_path / "out")
    assert time.perf_counter() - t0 < 60
    assert [r["removal_reason"] for r in removed] == ["oversized"]
    assert removed[0]["meta"]["bytes"] == len(_huge_line(BIG)) - 1
    assert manifest["counts"]["kept"] == 4
    assert growth < GROWTH_LIMIT_MB, growth


def test_huge_text_file_is_oversized_without_reading_it(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "big.txt").write_bytes((GOOD.encode() + b"\n") * (BIG // len(GOOD)))
    (folder / "small.txt").write_text(GOOD * 3)
    manifest, growth, removed = _curate(folder, tmp_path / "out")
    assert [r["removal_reason"] for r in removed] == ["oversized"]
    assert str((folder / "big.txt").stat().st_size) in removed[0]["detail"]
    assert manifest["counts"]["kept"] == 1
    assert growth < GROWTH_LIMIT_MB, growth


def _docx_bomb(path: Path, declared_lie: bool = False) -> None:
    """A DOCX whose document.xml inflates to BIG bytes (a few hundred KB on disk)."""
    head = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w='
            b'"http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>')
    tail = b"</w:t></w:r></w:p></w:body></w:document>"
    types = (b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
             b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
             b'<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument'
             b'.wordprocessingml.document.main+xml"/></Types>')
    rels = (b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
            b'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            b'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("[Content_Types].xml", types)
        z.writestr("_rels/.rels", rels)
        z.writestr("word/document.xml", head + b"A" * BIG + tail)
    if declared_lie:  # rewrite the declared sizes of document.xml to 1000 bytes (local and central headers)
        data = bytearray(path.read_bytes())
        real = (len(head) + BIG + len(tail)).to_bytes(4, "little")
        i = data.find(real)
        while i >= 0:
            data[i:i + 4] = (1000).to_bytes(4, "little")
            i = data.find(real, i + 4)
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("declared_lie", [False, True])
def test_docx_zip_bomb_is_refused_by_entry_and_total_caps(tmp_path, declared_lie):
    docx = pytest.importorskip("docx")
    folder = tmp_path / "in"
    folder.mkdir()
    _docx_bomb(folder / "bomb.docx", declared_lie)
    fine = docx.Document()
    fine.add_heading("Warehouse handbook", level=1)
    fine.add_paragraph("This handbook explains how the Lindenfeld warehouse works and who to ask for help.")
    fine.add_heading("Loading docks", level=2)
    fine.add_paragraph("Trucks arrive at the two loading docks between six and ten in the morning.")
    fine.save(str(folder / "fine.docx"))
    manifest, growth, removed = _curate(folder, tmp_path / "out", CFG)
    bomb = [r for r in removed if "bomb.docx" in r["id"]]
    assert [r["removal_reason"] for r in bomb] == ["decompression_bomb" if not declared_lie else "unreadable_file"]
    assert "word/document.xml" in bomb[0]["detail"]
    assert manifest["counts"]["kept"] >= 2  # the fine document's sections
    assert growth < GROWTH_LIMIT_MB, growth
    _assert_accounted(manifest)


def test_non_utf8_file_name_is_curated_and_reported(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9-notes.txt")  # Latin-1 bytes: not valid UTF-8
    (folder / name).write_text(GOOD * 3)
    (folder / "plain.txt").write_text("Other. " + GOOD * 3)
    jsonl = os.fsdecode(b"d\xff.jsonl")
    (folder / jsonl).write_bytes(_good_line(7))
    manifest, growth, removed = _curate(folder, tmp_path / "out")
    assert manifest["counts"] == {"input": 3, "kept": 3, "removed": 0, "synthetic": 0}
    entries = {e["path"]: e for e in manifest["inputs"]}
    shown = str(folder / "caf\\xe9-notes.txt")
    assert shown in entries and entries[shown]["name_not_utf8"] is True
    assert entries[shown]["records"]["kept"] == 1
    from hytron.data.writers import iter_records

    ids = {r["id"] for r in iter_records(tmp_path / "out", "kept")}
    assert "caf\\xe9-notes.txt" in ids and "good7" in ids
    (tmp_path / "out" / "manifest.json").read_bytes().decode("utf-8")  # strict UTF-8 on disk


def test_a_folder_of_every_bomb_is_curated_and_every_file_accounted(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    with gzip.open(folder / "bomb.jsonl.gz", "wb", compresslevel=1) as f:
        f.write(_huge_line(BIG))
    (folder / "line.jsonl").write_bytes(_huge_line(BIG))
    (folder / "big.txt").write_bytes(b"word " * (BIG // 5))
    (folder / os.fsdecode(b"\xfe\xff.txt")).write_text(GOOD * 3)
    (folder / "good.jsonl").write_bytes(b"".join(_good_line(i) for i in range(3)))
    (folder / "broken.jsonl.gz").write_bytes(b"\x1f\x8b not gzip at all")
    manifest, growth, removed = _curate(folder, tmp_path / "out")
    _assert_accounted(manifest)
    assert len(manifest["inputs"]) == 6
    assert manifest["counts"]["kept"] >= 2
    assert growth < GROWTH_LIMIT_MB, growth


def test_folder_shards_are_bounded_in_bytes_not_only_in_files(tmp_path):
    """A shard's documents are held together while staged: 5000 files of 1 MB each were one 5 GB shard."""
    from hytron.data.readers import plan_shards

    for i in range(3):
        (tmp_path / f"big{i}.txt").write_bytes(b"word " * 140_000)  # 700 KB
    for i in range(50):
        (tmp_path / f"small{i:02d}.txt").write_text(GOOD)
    shards = plan_shards([tmp_path], shard_bytes=1_000_000, shard_records=5000)
    assert [len(s.files) for s in shards] == [1, 1, 51]  # big0 | big1 | big2 + the small ones
    assert sorted(f for s in shards for f in s.files) == sorted(str(p) for p in tmp_path.iterdir())


def _warc_record(body: bytes, uri: str) -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    head = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:%s>\r\nWARC-Target-URI: %s\r\n"
            b"Content-Type: application/http; msgtype=response\r\nContent-Length: %d\r\n\r\n"
            % (uri.encode(), uri.encode(), len(http)))
    return gzip.compress(head + http + b"\r\n\r\n", compresslevel=1)


def test_warc_record_with_a_huge_body_is_oversized_and_the_archive_read_on(tmp_path):
    pytest.importorskip("fastwarc")
    folder = tmp_path / "in"
    folder.mkdir()
    page = b"<html><body><p>" + GOOD.encode() * 3 + b"</p></body></html>"
    (folder / "crawl.warc.gz").write_bytes(_warc_record(page, "a") + _warc_record(b"<html>" + b"x" * BIG, "b")
                                           + _warc_record(page.replace(b"river", b"brook"), "c"))
    manifest, growth, removed = _curate(folder, tmp_path / "out")
    assert [(r["id"], r["removal_reason"]) for r in removed] == [("<urn:uuid:b>", "oversized")]
    assert manifest["counts"]["kept"] == 2
    assert growth < GROWTH_LIMIT_MB, growth


def test_compressed_file_in_many_shards_is_decompressed_twice_not_once_per_shard(tmp_path, monkeypatch):
    """Each shard of a .jsonl.gz used to decompress the file from its start (quadratic: a 1 GB file in 200
    shards was 100 GB of inflating); now planning counts lines in one pass and staging reads every shard of
    the file in one more. The decompressed bytes are counted on the real readers."""
    from hytron.config import from_dict
    from hytron.data import readers
    from hytron.data.curate_config import CurateConfig
    from hytron.data.pipeline import curate
    from hytron.data.writers import iter_records

    lines = b"".join(_good_line(i) for i in range(3000))
    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "in" / "a.jsonl.gz", "wb", compresslevel=1) as f:
        f.write(lines)
    opened = []
    real_open = readers.open_bytes

    def counting_open(*args, **kwargs):
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(readers, "open_bytes", counting_open)
    cfg = from_dict(CurateConfig, {**CFG, "input": {**CFG["input"], "shard_records": 50}})
    manifest = curate([tmp_path / "in"], tmp_path / "out", cfg, progress=False)
    assert manifest["shards"] == 60 and manifest["counts"]["kept"] == 3000
    assert [r["id"] for r in iter_records(tmp_path / "out", "kept")] == [f"good{i}" for i in range(3000)]
    inflated = sum(f.raw.out for f in opened)
    assert inflated <= 2 * len(lines), (inflated, len(lines))  # old: ~31x


def test_parquet_row_group_of_a_huge_value_is_oversized_undecoded(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    folder = tmp_path / "in"
    folder.mkdir()
    good = [{"id": f"good{i}", "text": f"Note {i}. " + GOOD * 3} for i in range(6)]
    schema = pa.schema([("id", pa.string()), ("text", pa.large_string())])
    with pq.ParquetWriter(folder / "t.parquet", schema, compression="zstd") as w:
        w.write_table(pa.Table.from_pylist(good[:3], schema))
        w.write_table(pa.Table.from_pylist([{"id": "huge", "text": "x" * BIG}], schema))
        w.write_table(pa.Table.from_pylist(good[3:], schema))
    assert (folder / "t.parquet").stat().st_size < 2**20
    manifest, growth, removed = _curate(folder, tmp_path / "out")
    assert [r["removal_reason"] for r in removed] == ["oversized"] and removed[0]["meta"]["bytes"] > BIG
    assert manifest["counts"]["kept"] == 6
    assert growth < GROWTH_LIMIT_MB, growth


def test_compressed_shards_are_bounded_in_bytes_too(tmp_path):
    """5000 lines of up to 1 MB each were one shard held in memory; ranges now also end near shard_bytes."""
    from hytron.data.readers import plan_shards

    lines = [_good_line(i) for i in range(400)]
    with gzip.open(tmp_path / "a.jsonl.gz", "wb") as f:
        f.write(b"".join(lines))
    shards = plan_shards([tmp_path / "a.jsonl.gz"], shard_bytes=10_000, shard_records=5000)
    ranges = [(s.start, s.end) for s in shards]
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False)) and ranges[0][0] == 0
    for a, b in ranges[:-1]:
        assert 10_000 <= sum(len(x) for x in lines[a:b]) < 10_000 + len(lines[0]) + 10
    assert len(shards) >= 10
