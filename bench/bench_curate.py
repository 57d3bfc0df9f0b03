"""Benchmark: curation throughput, and our fuzzy dedup vs DataTrove's MinHash dedup on the same documents.

Builds a TinyWeb crawl, then in one run:
  1. the whole default pipeline (`hytron.data.pipeline.curate`, one worker process, quality classifiers
     trained in the run) -> documents/s per core;
  2. fuzzy dedup alone, ours: word 5-gram shingles, MinHash 20x5, LSH, exact-Jaccard verification,
     union-find (`hytron.data.dedup`), starting from the JSONL text;
  3. fuzzy dedup alone, DataTrove 0.10 (`pip install 'hytron[bench]'`): its four MinHash stages
     (signature, buckets, cluster, filter; 5-grams, 14x8, sha1) on one local task, from the same JSONL files;
     its English word tokenizer needs `spacy` (a blank pipeline, no model download).
Both dedups are scored against TinyWeb's truth: recall on `duplicate_near` docs and on all duplicates, and
good documents wrongly removed. Rounds alternate (shared, noisy machine); medians are reported.
The ratio (our dedup docs/s over DataTrove's) is printed last.

    python bench/bench_curate.py [--docs 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hytron.data import dedup, tinyweb
from hytron.data.curate_config import CurateConfig
from hytron.data.pipeline import curate


def our_fuzzy_dedup(corpus: Path) -> set[str]:
    cfg = CurateConfig().dedup
    ids, shingles = [], []
    for f in sorted(corpus.glob("*.jsonl")):
        with f.open() as fh:
            for line in fh:
                d = json.loads(line)
                ids.append(d["id"])
                shingles.append(dedup.shingle_hashes(d["text"], cfg.ngram))
    mh = dedup.MinHasher(cfg.bands * cfg.rows, cfg.seed)
    sigs = np.stack([mh.signature(s) for s in shingles])
    return {ids[d.index] for d in dedup.fuzzy_duplicates(sigs, shingles, cfg.bands, cfg.rows, cfg.threshold)}


def datatrove_fuzzy_dedup(corpus: Path, work: Path) -> set[str]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    # DataTrove's defaults (5-grams, 14 buckets x 8 hashes) with sha1 shingle hashing as FineWeb used: its
    # default xxhash path passes str to xxhash, which xxhash>=4 rejects
    mc = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    stages = [
        [JsonlReader(str(corpus)), MinhashDedupSignature(str(work / "sigs"), config=mc)],
        [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mc)],
        [MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=mc)],
        [JsonlReader(str(corpus)), MinhashDedupFilter(str(work / "remove_ids"),
                                                      exclusion_writer=JsonlWriter(str(work / "removed")))],
    ]
    for i, pipeline in enumerate(stages):
        tasks = mc.num_buckets if i == 1 else 1
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / f"logs{i}"),
                              skip_completed=False).run()
    removed = set()
    for f in (work / "removed").glob("*.jsonl*"):
        import gzip

        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            removed |= {json.loads(line)["id"] for line in fh}
    return removed


def score(removed: set[str], labels: dict) -> dict:
    near = [i for i, lab in labels.items() if lab["kind"] == "duplicate_near"]
    dups = [i for i, lab in labels.items() if lab["kind"].startswith("duplicate")]
    good = [i for i, lab in labels.items() if lab["kind"] in tinyweb.GOOD_KINDS]
    return {"near_dup_recall": round(sum(i in removed for i in near) / len(near), 4),
            "all_dup_recall": round(sum(i in removed for i in dups) / len(dups), 4),
            "good_docs_removed": sum(i in removed for i in good), "removed": len(removed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    try:
        from loguru import logger

        logger.remove()  # DataTrove logs every stage through loguru
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        tinyweb.generate(work / "tw", args.docs, seed=0)
        print(f"tinyweb: {args.docs} docs generated in {time.perf_counter() - t:.2f}s")
        labels = tinyweb.read_labels(work / "tw")
        corpus = work / "tw" / "corpus"
        cfg = CurateConfig()
        cfg.executor.workers = 1
        pipe_s, ours_s, dt_s = [], [], []
        for r in range(args.rounds):
            t = time.perf_counter()
            manifest = curate([work / "tw"], work / f"cur{r}", cfg, progress=False)
            pipe_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            ours = our_fuzzy_dedup(corpus)
            ours_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs = datatrove_fuzzy_dedup(corpus, work / f"dt{r}")
            dt_s.append(time.perf_counter() - t)
        n = args.docs
        pipe, o, d = statistics.median(pipe_s), statistics.median(ours_s), statistics.median(dt_s)
        print(f"default pipeline (1 worker): {n / pipe:,.0f} docs/s/core  ({pipe:.1f}s; kept "
              f"{manifest['counts']['kept']}, removed {manifest['counts']['removed']})")
        print(f"fuzzy dedup, hytron:    {n / o:,.0f} docs/s  ({o:.2f}s)  {score(ours, labels)}")
        print(f"fuzzy dedup, datatrove: {n / d:,.0f} docs/s  ({d:.2f}s)  {score(theirs, labels)}")
        print(f"ratio hytron/datatrove fuzzy dedup speed: {d / o:.2f}x")


if __name__ == "__main__":
    main()
