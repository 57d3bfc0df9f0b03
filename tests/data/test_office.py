"""PDF and DOCX input: each page or section a document with its source path, damaged files counted."""

from __future__ import annotations

import pytest

from hytron.data.curate_config import CurateConfig, InputConfig
from hytron.data.document import Document, Malformed
from hytron.data.pipeline import curate
from hytron.data.readers import plan_shards, read_shard
from hytron.data.writers import iter_records

PAGE1 = ["The quarterly report describes the new warehouse in Lindenfeld.",
         "Deliveries rose by a third after the second loading dock opened,",
         "and the night shift was moved to the morning."]
PAGE2 = ["Appendix: the safety rules for the loading docks.", "Every driver signs in at the gate."]


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal PDF with a Helvetica text layer, one text line per entry (written by hand: no PDF writer
    library needed; pypdf reads it back as any viewer would)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(len(pages)))}] "
            f"/Count {len(pages)} >>".encode(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, lines in enumerate(pages):
        body = " ".join("(" + ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*"
                        for ln in lines)
        ops = f"BT /F1 11 Tf 14 TL 72 720 Td {body} ET".encode()
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {5 + 2 * i} 0 R >>".encode())
        objs.append(b"<< /Length %d >>\nstream\n" % len(ops) + ops + b"\nendstream")
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    return out + f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()


def make_docx(path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Warehouse handbook", level=1)
    d.add_paragraph("This handbook explains how the Lindenfeld warehouse works and who to ask for help.")
    d.add_heading("Loading docks", level=2)
    d.add_paragraph("Trucks arrive at the two loading docks between six and ten in the morning.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Dock", "Opens"
    table.cell(1, 0).text, table.cell(1, 1).text = "North", "6:00"
    d.save(str(path))


def _items(folder):
    cfg = InputConfig()
    return [i for s in plan_shards([folder]) for i in read_shard(s, cfg)]


def test_pdf_pages_and_docx_sections_become_documents(tmp_path):
    pytest.importorskip("pypdf")
    pytest.importorskip("docx")
    folder = tmp_path / "company"
    folder.mkdir()
    (folder / "report.pdf").write_bytes(make_pdf([PAGE1, PAGE2]))
    make_docx(folder / "handbook.docx")
    docs = {d.id: d for d in _items(folder)}
    assert set(docs) == {"report.pdf#page-1", "report.pdf#page-2", "handbook.docx#section-1",
                         "handbook.docx#section-2"}
    page1 = docs["report.pdf#page-1"]
    assert isinstance(page1, Document) and page1.meta["path"] == str(folder / "report.pdf")
    assert page1.meta["page"] == 1 and page1.meta["pages"] == 2
    assert "second loading dock opened" in page1.text and "Appendix" not in page1.text
    sec2 = docs["handbook.docx#section-2"]
    assert sec2.meta["heading"] == "Loading docks" and sec2.meta["path"] == str(folder / "handbook.docx")
    assert "between six and ten" in sec2.text and "North | 6:00" in sec2.text
    assert "Trucks" not in docs["handbook.docx#section-1"].text


def test_damaged_pdf_and_docx_are_counted_never_fatal(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text(" ".join(PAGE1) * 4)
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4\nthis is not a real pdf")
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not a zip archive")
    (folder / "cut.pdf").write_bytes(make_pdf([PAGE1, PAGE2])[:300])
    items = _items(folder)
    bad = sorted((i.id, i.reason) for i in items if isinstance(i, Malformed))
    assert [reason for _, reason in bad] == ["unreadable_file"] * 3
    assert {i for i, _ in bad} == {"broken.docx#unreadable", "cut.pdf#unreadable", "scan.pdf#unreadable"}
    cfg = CurateConfig(profile="documents")
    cfg.executor.workers = 1
    m = curate([folder], tmp_path / "out", cfg, progress=False)
    assert m["removed_by_step"]["read"]["unreadable_file"] == 3 and m["balanced"]
    assert [r["id"] for r in iter_records(tmp_path / "out", "kept")] == ["good.txt"]
