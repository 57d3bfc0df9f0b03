"""PDF and DOCX readers: each PDF page, or each DOCX section (a heading and what follows it), becomes text.

Optional dependencies of the `curate` extra: `pypdf` (the PDF text layer; scanned pages without one come out
empty and are counted as `empty_text`) and `python-docx`. Any failure is the caller's to record as an
`unreadable_file` with the message: a damaged file never stops a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

SUFFIXES = {".pdf", ".docx"}


def _need(module: str, package: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"reading {package.split('-')[-1].upper()} files needs {package}: "
                          "pip install 'hytron[curate]'") from e


def pdf_pages(path: str | Path) -> Iterator[tuple[str, str, dict]]:
    """(id suffix, text, meta) per page of the PDF's text layer."""
    pypdf = _need("pypdf", "pypdf")
    reader = pypdf.PdfReader(str(path))
    for i, page in enumerate(reader.pages, start=1):
        yield f"page-{i}", page.extract_text() or "", {"page": i, "pages": len(reader.pages)}


def docx_sections(path: str | Path) -> Iterator[tuple[str, str, dict]]:
    """(id suffix, text, meta) per section: a Heading paragraph starts a new one; tables join their section."""
    _need("docx", "python-docx")
    import docx

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
