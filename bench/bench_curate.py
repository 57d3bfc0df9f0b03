"""Benchmark: hytron curation vs DataTrove, equal work end to end, and junk recall side by side.

Speed (same input, same work, one worker each, plain JSONL in and out): read a TinyWeb crawl, run web-page
heuristic filters, dedup, and write kept and removed documents.
  hytron     `curate` with the web profile; Gopher quality + repetition + C4 rules, exact + fuzzy dedup
             (word 5-grams, MinHash 20x5, LSH, Jaccard check); language id, quality classifiers, PII and
             decontamination switched off because the DataTrove chain has no counterpart that runs offline
  DataTrove  0.10 (`pip install 'hytron[bench]'`): JsonlReader -> GopherRepetition -> GopherQuality -> C4Quality
             -> FineWebQuality (each with an exclusion writer) -> JsonlWriter; then its four MinHash stages
             (signature, buckets, cluster, filter with an exclusion writer; 5-grams, 14x8, sha1) from the
             filtered JSONL, writing the kept documents; its English word tokenizer needs `spacy` (a blank
             pipeline, no model download). Its LanguageFilter needs a downloaded fastText model: not run.
Quality: per junk kind recall and good-document retention against the labels of TinyWeb and of RealText
(real prose from this Python install with planted junk, `hytron.data.realtext`), for hytron `web` and
`documents` (full pipelines as `hytron curate` runs them) and for the DataTrove chain above.
The ratio (hytron end-to-end docs/s over DataTrove's) is printed last.

    python bench/bench_curate.py [--docs 20000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hytron.data import realtext, tinyweb
from hytron.data.curate_config import load_curate_config
from hytron.data.pipeline import curate
from hytron.data.writers import iter_records


def hytron_equal_work(corpus: Path, out: Path) -> tuple[set[str], set[str]]:
    cfg = load_curate_config(None, {"profile": "web", "language": {"enabled": False},
                                    "quality": {"enabled": False}, "pii": {"enabled": False},
                                    "decontam": {"enabled": False}, "executor": {"workers": 1}})
    curate([corpus], out, cfg, progress=False)
    return {r["id"] for r in iter_records(out, "kept")}, {r["id"] for r in iter_records(out, "removed")}


def _ids(folder: Path) -> set[str]:
    out = set()
    for f in folder.rglob("*.jsonl*"):
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            out |= {json.loads(line)["id"] for line in fh}
    return out


def datatrove_chain(corpus: Path, work: Path) -> tuple[set[str], set[str]]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    def writer(name):
        return JsonlWriter(str(work / name), compression=None)

    # DataTrove's defaults (5-grams, 14 buckets x 8 hashes) with sha1 shingle hashing as FineWeb used: its
    # default xxhash path passes str to xxhash, which xxhash>=4 rejects
    mc = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    stages = [
        [JsonlReader(str(corpus)),
         GopherRepetitionFilter(exclusion_writer=writer("removed/gopher_rep")),
         GopherQualityFilter(exclusion_writer=writer("removed/gopher_qual")),
         C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=writer("removed/c4")),
         FineWebQualityFilter(exclusion_writer=writer("removed/fineweb")),
         writer("filtered")],
        [JsonlReader(str(work / "filtered")), MinhashDedupSignature(str(work / "sigs"), config=mc)],
        [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mc)],
        [MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=mc)],
        [JsonlReader(str(work / "filtered")),
         MinhashDedupFilter(str(work / "remove_ids"), exclusion_writer=writer("removed/minhash")), writer("kept")],
    ]
    for i, pipeline in enumerate(stages):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its stats
            LocalPipelineExecutor(pipeline=pipeline, tasks=mc.num_buckets if i == 2 else 1, workers=1,
                                  logging_dir=str(work / f"logs{i}"), skip_completed=False).run()
    return _ids(work / "kept"), _ids(work / "removed")


def score(kept: set[str], labels: dict, good_kinds, junk_kinds) -> dict:
    def share(ids):
        return sum(i in kept for i in ids) / max(len(ids), 1)

    row = {k: 1 - share([i for i, lab in labels.items() if lab["kind"] == k]) for k in junk_kinds}
    row["GOOD KEPT"] = share([i for i, lab in labels.items() if lab["kind"] in good_kinds])
    return row


def table(title: str, rows: dict[str, dict]) -> None:
    names = list(rows)
    print(f"\n{title}: junk recall per kind, and good documents kept")
    print(f"| {'kind':18s} | " + " | ".join(f"{n:>20s}" for n in names) + " |")
    for k in next(iter(rows.values())):
        print(f"| {k:18s} | " + " | ".join(f"{rows[n][k]:>20.3f}" for n in names) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    try:
        from loguru import logger

        logger.remove()  # DataTrove logs every stage through loguru
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tinyweb.generate(work / "tw", args.docs, seed=0)
        realtext.build(work / "rt", seed=0)
        corpus = work / "tw" / "corpus"
        ours_s, dt_s = [], []
        for r in range(args.rounds):
            t = time.perf_counter()
            ours_kept, ours_removed = hytron_equal_work(corpus, work / f"eq{r}")
            ours_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            dt_kept, dt_removed = datatrove_chain(corpus, work / f"dt{r}")
            dt_s.append(time.perf_counter() - t)
        n = args.docs
        assert len(ours_kept | ours_removed) == n, "hytron must account for every document"
        o, d = statistics.median(ours_s), statistics.median(dt_s)
        print(f"end to end, {n} TinyWeb docs, 1 worker each (read, filter, dedup, write kept and removed):")
        print(f"  hytron web (equal work):   {n / o:8,.0f} docs/s ({o:.1f}s; kept {len(ours_kept)})")
        print(f"  datatrove FineWeb chain:   {n / d:8,.0f} docs/s ({d:.1f}s; kept {len(dt_kept)}, "
              f"removed {len(dt_removed)})")

        rt_kept = {}
        for profile in ("web", "documents"):
            cfg = load_curate_config(None, {"profile": profile, "executor": {"workers": 1}})
            curate([work / "tw"], work / f"tw-{profile}", cfg, progress=False)
            curate([work / "rt" / "corpus"], work / f"rt-{profile}", cfg, progress=False)
            rt_kept[profile] = {r["id"] for r in iter_records(work / f"rt-{profile}", "kept")}
        tw_labels = tinyweb.read_labels(work / "tw")
        rows = {f"hytron {p}": score({r["id"] for r in iter_records(work / f"tw-{p}", "kept")}, tw_labels,
                                     tinyweb.GOOD_KINDS, tinyweb.JUNK_KINDS) for p in ("web", "documents")}
        rows["datatrove chain"] = score(dt_kept, tw_labels, tinyweb.GOOD_KINDS, tinyweb.JUNK_KINDS)
        table(f"TinyWeb ({n} docs)", rows)
        rt_dt_kept, _ = datatrove_chain(work / "rt" / "corpus", work / "dt-rt")
        rt_labels = realtext.read_labels(work / "rt")
        rows = {f"hytron {p}": score(rt_kept[p], rt_labels, realtext.GOOD_KINDS, realtext.JUNK_KINDS)
                for p in ("web", "documents")}
        rows["datatrove chain"] = score(rt_dt_kept, rt_labels, realtext.GOOD_KINDS, realtext.JUNK_KINDS)
        for name, kept in (("hytron web", rt_kept["web"]), ("hytron documents", rt_kept["documents"]),
                           ("datatrove chain", rt_dt_kept)):
            rows[name]["PROSE KEPT"] = score(kept, rt_labels, realtext.PROSE_KINDS, ())["GOOD KEPT"]
        table(f"RealText ({len(rt_labels)} docs, Python {sys.version.split()[0]})", rows)
        print(f"\nratio hytron/datatrove end-to-end speed (equal work): {d / o:.2f}x")


if __name__ == "__main__":
    main()
