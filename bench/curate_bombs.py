"""Build issue 26's curation bombs at full size (or scaled), to run `hytron curate` on under a memory cap.

    python bench/curate_bombs.py /tmp/bombs            # 3 GB line in a .jsonl.gz, 5 GB .zst line, 1 GB single-line
                                                       # .jsonl, 5 GB DOCX zip bomb, 1 GB .txt, a non-UTF-8 name
    prlimit --as=2147483648 /usr/bin/time -v timeout 1200 hytron curate /tmp/bombs --out /tmp/bombs-out --workers 1

Every file is written in 1 MiB steps (constant memory); on disk it is ~2 GB (the two plain 1 GB files) plus a few
MB. The folder also holds ordinary documents (a small TinyWeb crawl), which must come out kept.
tests/data/test_bombs.py is the CI version.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import zipfile
from pathlib import Path

GB = 2**30
STEP = 2**20
GOOD = ("The river flows past the old mill near the village of Lindenfeld. It was built in 1820 and still grinds "
        "grain for the bakers of the valley, who buy their flour there every week. In winter the wheel freezes, "
        "and the miller uses an electric motor that his grandson installed after the flood of 1998.")


def _repeat(f, byte: bytes, n: int) -> None:
    block = byte * STEP
    for _ in range(n // STEP):
        f.write(block)
    f.write(byte * (n % STEP))


def build(folder: Path, scale: float = 1.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    size = lambda n: max(int(n * scale), STEP)  # noqa: E731 - local shorthand
    import tempfile

    from hytron.data import tinyweb

    with tempfile.TemporaryDirectory() as tmp:  # 500 ordinary web documents (and TinyWeb's planted junk)
        tinyweb.generate(tmp, 500, seed=0)
        (folder / "good.jsonl").write_bytes((Path(tmp) / "corpus" / "crawl-00000.jsonl").read_bytes())
    good = [{"id": f"good{i}", "text": f"Report {i}. {GOOD}"} for i in range(2)]
    with gzip.open(folder / "line3g.jsonl.gz", "wb", compresslevel=9) as f:  # one 3 GB line in ~3 MB
        f.write(json.dumps(good[0]).encode() + b'\n{"id": "huge", "text": "')
        _repeat(f, b"x", size(3 * GB))
        f.write(b'"}\n' + json.dumps(good[1]).encode() + b"\n")
    import zstandard

    with open(folder / "line5g.jsonl.zst", "wb") as raw, zstandard.ZstdCompressor(level=19).stream_writer(raw) as f:
        f.write(b'{"id": "huge5", "text": "')  # a 5 GB line in ~160 KB
        _repeat(f, b"y", size(5 * GB))
        f.write(b'"}\n')
    with open(folder / "line1g.jsonl", "wb") as f:  # a 1 GB single line (was 537 shards each re-reading it)
        f.write(b'{"id": "huge1", "text": "')
        _repeat(f, b"z", size(GB))
        f.write(b'"}\n')
    with open(folder / "big.txt", "wb") as f:  # a 1 GB text file (peaked at 3.2 GB)
        line = (GOOD + "\n").encode()
        for _ in range(size(GB) // len(line)):
            f.write(line)
    docs = folder / "docs"
    docs.mkdir(exist_ok=True)
    with zipfile.ZipFile(docs / "bomb.docx", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:  # 5 GB in ~5 MB
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"/>')
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/'
                    b'2006/main"><w:body><w:p><w:r><w:t>')
            _repeat(f, b"A", size(5 * GB))
            f.write(b"</w:t></w:r></w:p></w:body></w:document>")
    (docs / os.fsdecode(b"caf\xe9-notes.txt")).write_text(f"Notes from the caf\u00e9. {GOOD}\n")  # Latin-1 name
    (docs / "memo.txt").write_text(f"Memo. {GOOD} The memo ends here, with thanks to the staff.\n")
    return sorted(p for p in folder.rglob("*") if p.is_file())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every bomb's inflated size (default 1)")
    args = ap.parse_args()
    for p in build(args.folder, args.scale):
        print(f"{p.stat().st_size:>14,d}  {os.fsencode(p)!r}")
