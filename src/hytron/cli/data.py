"""Data verbs: `hytron tinyweb` (synthetic crawl with labels and evals) and `hytron curate` (the pipeline)."""

from __future__ import annotations

import json
import sys

from hytron.cli.recipes import add_set
from hytron.data.filters import PROFILES


def add_tinyweb(sub) -> None:
    p = sub.add_parser("tinyweb", help="write the TinyWeb synthetic crawl, its labels and held-out eval sets")
    p.add_argument("--docs", type=int, default=20_000, help="number of crawl documents (default 20000)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tinyweb)


def cmd_tinyweb(args) -> int:
    from hytron.data import tinyweb

    meta = tinyweb.generate(args.out, args.docs, args.seed)
    print(f"wrote {meta['n_docs']} docs to {args.out}/corpus with labels and evals: {meta['counts']}")
    print(f"next: hytron curate {args.out} --out {args.out.rstrip('/')}-curated")
    return 0


def add_curate(sub) -> None:
    p = sub.add_parser("curate", help="curate documents: filter, dedup, score quality, redact PII, decontaminate")
    p.add_argument("inputs", nargs="*", help="files or folders: .jsonl[.gz|.zst], .parquet, .txt/.md/.html/.pdf/.docx "
                                             "folders, .warc[.gz]; a TinyWeb folder brings its evals and reference")
    p.add_argument("--out", required=True, help="output folder (kept/, removed/, manifest.json)")
    p.add_argument("--config", help="YAML/JSON curation config (any subset of hytron.data.curate_config fields)")
    add_set(p)  # a config field, e.g. --set dedup.threshold=0.8; applied after --config and the flags below
    p.add_argument("--profile", choices=list(PROFILES),
                   help="heuristic rules (hytron.data.filters.PROFILES): web for crawls (the default), documents "
                        "for your own files")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--executor", choices=["local", "ray"], help="where shard tasks run (default local)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing or unfinished run in --out")
    p.add_argument("--explain", metavar="ID", help="say why document ID was kept or removed in --out, and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_curate)


def cmd_curate(args) -> int:
    from hytron.data import pipeline
    from hytron.data.curate_config import load_curate_config
    from hytron.data.summary import removal_summary

    if args.explain:
        rec = pipeline.explain(args.out, args.explain)
        if rec is None:
            print(f"{args.explain}: not found in {args.out}/kept or {args.out}/removed", file=sys.stderr)
            return 1
        if rec["status"] == "removed":
            score = "" if rec["score"] is None else f" (score {rec['score']:.4g})"
            detail = f", {rec['detail']}" if rec.get("detail") else ""
            print(f"{rec['id']}: removed at step '{rec['step']}': {rec['removal_reason']}{score}{detail}")
        else:
            print(f"{rec['id']}: kept, quality bucket {rec['quality_bucket']}")
        print(json.dumps(rec, indent=2, ensure_ascii=False))
        return 0
    if not args.inputs:
        raise ValueError("curate needs at least one input (or --explain ID)")
    flags = {"profile": args.profile, "executor.workers": args.workers, "executor.kind": args.executor}
    cfg = load_curate_config(args.config, sets=[f"{k}={v}" for k, v in flags.items() if v is not None]
                             + args.overrides)
    m = pipeline.curate(args.inputs, args.out, cfg, overwrite=args.overwrite, progress=not args.quiet)
    c = m["counts"]
    print(f"{c['input']} in, {c['kept']} kept, {c['removed']} removed, {c['synthetic']} synthetic -> {args.out} "
          f"(profile {m['config']['profile']})")
    for step, reasons in m["removed_by_step"].items():
        print(f"  {step}: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])))
    if m["removed_by_step"]:
        print(removal_summary(m, args.out)[-1])
    from hytron.data import tinyweb

    for path in args.inputs:
        if tinyweb.is_tinyweb(path) and len(args.inputs) == 1:
            score = tinyweb.evaluate(path, args.out)
            print("against TinyWeb's ground truth (recall / precision):")
            for kind, s in score["kinds"].items():
                print(f"  {kind:16s} {s['recall']:.3f} / {s['precision']:.3f}  ({s['docs']} docs)")
            print(f"  good docs kept {score['good_kept']:.3f}, planted PII redacted {score['pii_redacted']:.3f}")
    return 0
