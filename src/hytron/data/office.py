"""PDF and DOCX readers: each PDF page, or each DOCX section (a heading and what follows it), becomes text.

Optional dependencies of the `curate` extra: `pypdf` (the PDF text layer; scanned pages without one come out
empty and are counted as `empty_text`) and `python-docx`. Any failure is the caller's to record as an
`unreadable_file` with the message: a damaged file never stops a run.

A DOCX is a ZIP, and python-docx inflates every part into memory, so a 5 MB file holding a 5 GB document.xml
reached 5.7 GB (issue 26). `check_zip` runs first: declared sizes are checked against an entry cap and a total
cap, then every entry is inflated in 1 MiB steps and counted, because declared sizes are written by whoever made
the file (zipfile stops at the declared size and reports the CRC mismatch, which this turns into the error).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

from hytron.data.io import DecompressionBomb

SUFFIXES = {".pdf", ".docx"}
MAX_ZIP_ENTRIES = 10_000  # a DOCX has tens of parts; thousands of tiny entries is another way to exhaust memory


def _need(module: str, package: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"reading {package.split('-')[-1].upper()} files needs {package}: "
                          "pip install 'hytron[curate]'") from e


def check_zip(path: str | Path, max_total_bytes: int, max_entry_bytes: int) -> None:
    """Raise `DecompressionBomb` (naming the entry and the cap) if the ZIP at `path` declares or actually
    inflates to more than `max_entry_bytes` in one entry or `max_total_bytes` in all; memory stays ~1 MiB."""
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise DecompressionBomb(f"{len(infos)} zip entries, over {MAX_ZIP_ENTRIES}")
        total = 0
        for info in infos:  # declared sizes first: refuses the usual bomb without inflating anything
            if info.file_size > max_entry_bytes:
                raise DecompressionBomb(f"zip entry {info.filename} declares {info.file_size} bytes, over "
                                        f"input.max_zip_entry_bytes={max_entry_bytes}")
            total += info.file_size
            if total > max_total_bytes:
                raise DecompressionBomb(f"zip entries declare over input.max_file_bytes={max_total_bytes} "
                                        f"bytes in all (at {info.filename})")
        total = 0
        for info in infos:  # then the bytes they really inflate to
            n = 0
            with z.open(info) as entry:
                while chunk := entry.read(1 << 20):
                    n += len(chunk)
                    total += len(chunk)
                    if n > max_entry_bytes or total > max_total_bytes:
                        raise DecompressionBomb(f"zip entry {info.filename} inflates past its caps "
                                                f"(input.max_zip_entry_bytes={max_entry_bytes}, "
                                                f"input.max_file_bytes={max_total_bytes})")


def pdf_pages(path: str | Path, max_total_bytes: int | None = None,
              max_entry_bytes: int | None = None) -> Iterator[tuple[str, str, dict]]:
    """(id suffix, text, meta) per page of the PDF's text layer (the caller caps the file's size; pypdf caps
    each stream's inflated size itself)."""
    pypdf = _need("pypdf", "pypdf")
    reader = pypdf.PdfReader(str(path))
    for i, page in enumerate(reader.pages, start=1):
        yield f"page-{i}", page.extract_text() or "", {"page": i, "pages": len(reader.pages)}


def docx_sections(path: str | Path, max_total_bytes: int = 100_000_000,
                  max_entry_bytes: int = 32_000_000) -> Iterator[tuple[str, str, dict]]:
    """(id suffix, text, meta) per section: a Heading paragraph starts a new one; tables join their section.
    The ZIP is checked against the caps (`check_zip`) before python-docx inflates it."""
    _need("docx", "python-docx")
    import docx

    check_zip(path, max_total_bytes, max_entry_bytes)
    document = docx.Document(str(path))
    sections: list[tuple[str, list[str]]] = [("", [])]
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            sections[-1][1].extend(" | ".join(c.text.strip() for c in row.cells) for row in block.rows)
            continue
        style = (block.style.name if block.style is not None else "") or ""
        if style.lower().startswith(("heading", "title")) and block.text.strip():
            sections.append((block.text.strip(), [block.text.strip()]))
        elif block.text.strip():
            sections[-1][1].append(block.text.strip())
    n = 0
    for heading, paras in sections:
        if paras:
            n += 1
            yield f"section-{n}", "\n\n".join(paras), {"section": n, "heading": heading}


READERS = {".pdf": pdf_pages, ".docx": docx_sections}
