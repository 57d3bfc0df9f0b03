"""The curation pipeline: per-shard steps, one global decision step, accounting, manifest, resume, explain.

`curate(inputs, out_dir, cfg)` runs three phases over deterministic shards (hytron.data.readers):

  A. stage (per shard, parallel)   read -> `steps.STAGE_STEPS` for each document (Unicode repair, language id,
     decontamination, token count and the profile's heuristic verdict, deferred) -> `steps.SCORE_STEPS` for the
     shard's survivors (quality scores, exact key, MinHash signature).
  B. decide (global, one process)  quality buckets from token-weighted percentiles; then `steps.DECIDE_STEPS`
     (heuristic removals for buckets below `quality.skip_heuristics_from_bucket`, exact dedup, fuzzy dedup).
     Input order decides which copy is kept, so the result is independent of workers and executor.
  C. finish (per shard, parallel)  `steps.FINISH_STEPS` for the kept docs (PII redaction, optional rephrasing);
     write kept/, removed/, synthetic/ (formats in hytron.data.writers) and per-shard stats.

The driver loads the plan, config and models once (`load_context`) and passes that `steps.Context` to every
task and step; no state outlives a run.

Every input record (documents and malformed lines) ends in exactly one of kept/ or removed/; removed
records carry `step`, `removal_reason`, `score`, `detail`. A single bad file never aborts a run: the readers
turn bombs, oversized records and damage into removals (hytron.data.readers), and a reader that fails anyway
ends its shard with one `unreadable_file` record after what it read. The manifest accounts for every input
file: its records kept and removed per reason. Work state lives in OUT/.work: a plan with a
fingerprint of inputs+config, and a completion marker per phase and shard. Re-running the same command
after a crash redoes only unfinished shards; a finished run (OUT/manifest.json present) is not redone.

manifest.json (the data card): input files with sha256, the resolved config (profile and every threshold), the
profile's steps and heuristic rules, the shard count, counts (input, kept, removed, synthetic), removals per
step and reason, kept docs and tokens per source and quality bucket, PII and Unicode repair counts, quality
thresholds.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from hytron.config import from_dict, to_dict
from hytron.data import dedup, filters, quality, readers, tinyweb
from hytron.data.curate_config import CurateConfig
from hytron.data.decontam import EvalIndex
from hytron.data.document import Malformed, approx_tokens
from hytron.data.executors import run_tasks
from hytron.data.io import display_path, name_is_utf8, write_json
from hytron.data.steps import DECIDE_STEPS, FINISH_STEPS, SCORE_STEPS, STAGE_STEPS, STEPS, Context, Decision, Doc
from hytron.data.writers import ShardWriter, iter_records

FORMAT_VERSION = 1


# ---- work state ---------------------------------------------------------------------------------------------


def _work(out: Path) -> Path:
    return out / ".work"


def _marker(out: Path, phase: str, i: int | None = None) -> Path:
    return _work(out) / "done" / (f"{phase}-{i:05d}" if i is not None else phase)


def _mark(out: Path, phase: str, i: int | None = None) -> None:
    p = _marker(out, phase, i)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")


def _write_json(path: Path, data) -> None:
    write_json(path, data, indent=1, sort_keys=True)


def load_context(out: Path) -> Context:
    """The run's plan, resolved config and models, read once by the driver and passed to every task (pickled to
    worker processes, put once in Ray's object store)."""
    plan = json.loads((_work(out) / "plan.json").read_text())
    cfg = from_dict(CurateConfig, plan["config"])
    shards = [readers.Shard(**{**s, "files": tuple(s["files"])}) for s in plan["shards"]]
    d = cfg.decontam
    eval_index = EvalIndex.from_files(d.eval_files, d.ngram, d.min_overlap) if d.enabled and d.eval_files else None
    qdir = _work(out) / "quality"
    return Context(out, cfg, shards, plan.get("stage_tasks") or [[s.index] for s in shards], eval_index,
                   quality.QualityModel.load(qdir) if (qdir / "done").is_file() else None,
                   dedup.MinHasher(cfg.dedup.bands * cfg.dedup.rows, cfg.dedup.seed))


# ---- phase A: stage -----------------------------------------------------------------------------------------


def stage_task(ctx: Context, task: int) -> None:
    """Phase A for one task's shards (one shard, or every shard of one compressed file, read in one pass):
    read, then the stage and score steps; shards already staged are read past."""
    group = ctx.tasks[task]
    shards = [ctx.shards[i] for i in group]
    out = ctx.out
    todo = [i for i in group if not _marker(out, "stage", i).is_file()]
    records: dict[int, list[dict]] = {i: [] for i in todo}  # filled one shard at a time: shards come in order
    items = readers.read_shards(shards, ctx.cfg.input)
    current = group[0]
    while True:
        try:
            k, item = next(items, (None, None))
        except Exception as e:  # noqa: BLE001 - a reader failure ends its shard with a counted record, not the run
            shard = ctx.shards[current]
            shown = display_path(shard.path)
            k, item = group.index(current), Malformed(
                f"{shown}:{shard.start}:reader_error", display_path(Path(shard.path).name), "unreadable_file", "",
                display_path(f"reading stopped: {type(e).__name__}: {e}"), path=shown)
            items = iter(())
        if item is None:
            break
        if group[k] != current and current in records:  # the previous shard is complete: write it, free it
            _finish_stage(out, current, records.pop(current), ctx)
        current = group[k]
        if current in records:
            records[current].append(_stage_item(item, shards[k], ctx))
    for i in todo:  # the rest, including shards that gave no records
        if i in records:
            _finish_stage(out, i, records.pop(i), ctx)


def _stage_item(item, shard: readers.Shard, ctx: Context) -> dict:
    """The staged record of one reader item: a Malformed one removed at `read`, a document through the steps."""
    # the input file a record came from: the shard's file, or for folder shards the file in the record
    shown = display_path(shard.path)
    source_file = shown if shard.fmt != "files" else (item.path if isinstance(item, Malformed)
                                                     else item.meta.get("path", shown))
    if isinstance(item, Malformed):
        meta = {"bytes": item.size} if item.size is not None else {}
        return {"id": item.id, "text": item.raw, "source": item.source, "meta": meta, "attrs": {},
                "input": item.path or source_file,
                "removed": {"step": "read", "reason": item.reason, "score": None, "detail": item.detail}}
    try:
        doc, removed = Doc(item.text, {}), None
        for step in STAGE_STEPS:
            if (drop := step.run(doc, ctx)) is not None:
                removed = {"step": step.name, "reason": drop.reason, "score": drop.score, "detail": drop.detail}
                break
        rec = {"id": item.id, "text": doc.text, "source": item.source, "meta": item.meta, "attrs": doc.attrs,
               "removed": removed}
    except Exception as e:  # noqa: BLE001 - one bad document is counted and kept in removed/, not a crash
        rec = {"id": item.id, "text": item.text, "source": item.source, "meta": item.meta, "attrs": {},
               "removed": {"step": "error", "reason": "processing_error", "score": None,
                           "detail": f"{type(e).__name__}: {e}"}}
    rec["input"] = source_file
    return rec


def _finish_stage(out: Path, index: int, records: list[dict], ctx: Context) -> None:
    """The score steps over the survivors; write the staged shard, its side records and hashes, and its marker."""
    survivors = [k for k, rec in enumerate(records) if rec["removed"] is None]
    docs = [Doc(records[k]["text"], records[k]["attrs"]) for k in survivors]  # attrs shared with the records
    for step in SCORE_STEPS:
        step.run(docs, ctx)
    sigs = np.zeros((len(docs), ctx.cfg.dedup.bands * ctx.cfg.dedup.rows), dtype=np.uint32)
    shingles, offsets, side = [], [0], []
    for j, (k, doc) in enumerate(zip(survivors, docs)):
        if doc.signature is not None:
            sigs[j] = doc.signature
            shingles.append(doc.shingles)
            offsets.append(offsets[-1] + len(doc.shingles))
        side.append({"pos": k, "id": records[k]["id"], "tokens": doc.attrs["tokens"],
                     "heuristic": doc.attrs.get("heuristic"), "quality": doc.attrs.get("quality_scores"),
                     "exact": doc.exact})
    stage = _work(out) / "stage"
    stage.mkdir(parents=True, exist_ok=True)
    # lone surrogates (a JSON input's "\\ud800" in meta) are written as JSON escapes: they read back unchanged
    with (stage / f"docs-{index:05d}.jsonl.tmp").open("w", encoding="utf-8", errors="backslashreplace") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    (stage / f"docs-{index:05d}.jsonl.tmp").replace(stage / f"docs-{index:05d}.jsonl")
    _write_json(stage / f"attrs-{index:05d}.json", {"n_records": len(records), "survivors": side})
    np.savez(stage / f"hashes-{index:05d}.tmp.npz", sigs=sigs,
             shingles=np.concatenate(shingles) if shingles else np.zeros(0, np.uint64),
             offsets=np.array(offsets, dtype=np.int64))
    (stage / f"hashes-{index:05d}.tmp.npz").replace(stage / f"hashes-{index:05d}.npz")
    _mark(out, "stage", index)


# ---- phase B: decide ----------------------------------------------------------------------------------------


def decide(out: Path, cfg: CurateConfig, n_shards: int) -> dict:
    """Phase B: the decide steps over the survivors of every shard, in input order. Returns a summary."""
    stage = _work(out) / "stage"
    side, where = [], []  # survivors in global input order, and their (shard, pos)
    for i in range(n_shards):
        attrs = json.loads((stage / f"attrs-{i:05d}.json").read_text())
        for s in attrs["survivors"]:
            side.append(s)
            where.append((i, s["pos"]))
    def load_hashes():
        sigs, shingles = [], []
        for i in range(n_shards):
            z = np.load(stage / f"hashes-{i:05d}.npz")
            sigs.append(z["sigs"])
            off, sh = z["offsets"], z["shingles"]
            shingles += [sh[off[j]:off[j + 1]] for j in range(len(off) - 1)]
        return np.concatenate(sigs), shingles

    d = Decision(cfg, side, load_hashes)
    removed: dict[int, dict] = {}
    for step in DECIDE_STEPS:
        for k, drop in step.run(d).items():
            removed[k] = {"step": step.name, "reason": drop.reason, "score": drop.score, "detail": drop.detail}
            d.active[k] = False
    per_shard: list[dict] = [{} for _ in range(n_shards)]
    for k, (i, pos) in enumerate(where):
        per_shard[i][str(pos)] = {"bucket": d.buckets[k], "removed": removed.get(k)}
    for i in range(n_shards):
        _write_json(_work(out) / "decisions" / f"shard-{i:05d}.json", per_shard[i])
    summary = {"survivors_after_stage": len(side), **({"quality_thresholds": d.thresholds} if d.thresholds else {})}
    _write_json(_work(out) / "decisions" / "summary.json", summary)
    _mark(out, "decide")
    return summary


# ---- phase C: finish ----------------------------------------------------------------------------------------


def finish_shard(ctx: Context, index: int) -> None:
    """Phase C for one shard: the finish steps over its kept docs; write kept/removed/synthetic and stats."""
    cfg, out = ctx.cfg, ctx.out
    decisions = json.loads((_work(out) / "decisions" / f"shard-{index:05d}.json").read_text())
    kept_w = ShardWriter(out, "kept", index, cfg.output.compression)
    removed_w = ShardWriter(out, "removed", index, cfg.output.compression)
    synth_w = ShardWriter(out, "synthetic", index, cfg.output.compression) if cfg.rephrase.enabled else None
    stats = {"input": 0, "kept": 0, "removed": {}, "kept_by_source_bucket": {}, "tokens_by_source_bucket": {},
             "pii_redacted": {}, "unicode_repaired": 0, "synthetic": {}, "kept_with_code": 0, "by_input": {}}
    kept: list[Doc] = []
    with (_work(out) / "stage" / f"docs-{index:05d}.jsonl").open(encoding="utf-8") as f:
        for pos, line in enumerate(f):
            rec = json.loads(line)
            stats["input"] += 1
            decision = decisions.get(str(pos), {})
            removed = rec["removed"] or decision.get("removed")
            meta = {**rec["meta"], **rec["attrs"]}
            if decision.get("bucket") is not None:
                meta["quality_bucket"] = decision["bucket"]
            per_input = stats["by_input"].setdefault(rec.get("input", ""), {"kept": 0, "removed": {}})
            if removed:
                per_input["removed"][removed["reason"]] = per_input["removed"].get(removed["reason"], 0) + 1
                removed_w.write({"id": rec["id"], "text": rec["text"], "source": rec["source"],
                                 "step": removed["step"], "removal_reason": removed["reason"],
                                 "score": removed["score"], "detail": removed["detail"], "meta": meta})
                by_step = stats["removed"].setdefault(removed["step"], {})
                by_step[removed["reason"]] = by_step.get(removed["reason"], 0) + 1
                continue
            per_input["kept"] += 1
            kept.append(Doc(rec["text"], meta, rec["id"], rec["source"], meta.pop("quality_bucket", None)))
    for step in FINISH_STEPS:
        step.run(kept, ctx)
    for doc in kept:
        meta = doc.attrs
        for kind, c in doc.redacted.items():
            stats["pii_redacted"][kind] = stats["pii_redacted"].get(kind, 0) + c
        stats["unicode_repaired"] += bool(meta.get("unicode_repaired"))
        stats["kept_with_code"] += bool(meta.get("code_share"))
        meta["tokens"] = approx_tokens(doc.text)
        kept_w.write({"id": doc.id, "text": doc.text, "source": doc.source, "quality_bucket": doc.bucket, "meta": meta})
        stats["kept"] += 1
        key = "null" if doc.bucket is None else str(doc.bucket)
        for name, inc in (("kept_by_source_bucket", 1), ("tokens_by_source_bucket", meta["tokens"])):
            src = stats[name].setdefault(doc.source, {})
            src[key] = src.get(key, 0) + inc
        for rec in doc.synthetic:
            synth_w.write(rec)
            style = rec["meta"]["style"]
            stats["synthetic"][style] = stats["synthetic"].get(style, 0) + 1
    for w in (kept_w, removed_w, synth_w):
        if w is not None:
            w.close()
    _write_json(_work(out) / "stats" / f"shard-{index:05d}.json", stats)
    _mark(out, "finish", index)


# ---- driver -------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _input_info(f: Path) -> dict:
    """The manifest's line for one input file; a file that cannot be read is reported, not fatal."""
    info: dict = {"path": display_path(f), "format": readers.detect_format(f)}
    if not name_is_utf8(f):
        info["name_not_utf8"] = True  # shown with \xNN for its undecodable bytes, in ids too
    try:
        info.update({"bytes": f.stat().st_size, "sha256": _sha256(f)})
    except OSError as e:
        info.update({"bytes": None, "sha256": None, "error": display_path(str(e))})
    return info


def resolve_defaults(inputs: list[str | Path], cfg: CurateConfig) -> CurateConfig:
    """Fill reference docs and eval sets from a TinyWeb input when the config names none."""
    for p in inputs:
        if tinyweb.is_tinyweb(p):
            meta = json.loads((Path(p) / "tinyweb.json").read_text())["paths"]
            if not cfg.quality.reference:
                cfg.quality.reference = [str(Path(p) / meta["reference"])]
            if not cfg.decontam.eval_files:
                cfg.decontam.eval_files = [str(Path(p) / meta[k]) for k in ("validation", "world_qa", "arithmetic")]
    return cfg


def _train_quality(out: Path, cfg: CurateConfig, shards: list[readers.Shard]) -> None:
    qdir = _work(out) / "quality"
    if (qdir / "done").is_file() or not (cfg.quality.enabled and cfg.quality.reference):
        return
    reference = []
    for path in cfg.quality.reference:
        with Path(path).open(encoding="utf-8") as f:
            reference += [json.loads(line)["text"] for line in f if line.strip()]
    per_shard = -(-cfg.quality.sample_docs // max(len(shards), 1))
    random_docs = []
    for group in readers.one_pass_groups(shards):  # the first docs of every shard: deterministic, spread out
        taken = [0] * len(group)
        for k, item in readers.read_shards([shards[i] for i in group], cfg.input):
            if min(taken) >= per_shard or len(random_docs) >= cfg.quality.sample_docs:
                break
            if taken[k] < per_shard and not isinstance(item, Malformed):
                random_docs.append(item.text)
                taken[k] += 1
    model = quality.QualityModel.train(reference, random_docs, cfg.quality.classifiers, cfg.quality.seed)
    model.save(qdir)
    _write_json(qdir / "training.json", {"reference_docs": len(reference), "random_docs": len(random_docs)})
    (qdir / "done").write_text("ok\n")


def curate(inputs: list[str | Path], out_dir: str | Path, cfg: CurateConfig | None = None, *,
           overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or resume) curation of `inputs` into `out_dir`; returns the manifest."""
    out = Path(out_dir)
    cfg = resolve_defaults(inputs, copy.deepcopy(cfg) if cfg else CurateConfig())
    if overwrite and out.exists():
        for name in ("kept", "removed", "synthetic", "quality", ".work", "manifest.json"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    if (out / "manifest.json").is_file():
        manifest = json.loads((out / "manifest.json").read_text())
        if progress:
            print(f"[curate] {out} is already complete (manifest.json); pass --overwrite to redo it",
                  file=sys.stderr)
        return manifest
    t_start = time.time()
    files = readers.expand_inputs(inputs)
    shards = readers.plan_shards(inputs, cfg.input.shard_bytes, cfg.input.shard_records, cfg.input)
    input_info = [_input_info(f) for f in files]
    resolved = to_dict(cfg)
    fingerprint = hashlib.sha256(json.dumps([resolved, input_info], sort_keys=True).encode()).hexdigest()
    plan_path = _work(out) / "plan.json"
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        if old["fingerprint"] != fingerprint:
            raise ValueError(f"{out} holds an unfinished run with different inputs or config; pass --overwrite "
                             "to discard it, or choose another --out")
        if progress:
            print(f"[curate] resuming the unfinished run in {out}", file=sys.stderr)
    else:
        _write_json(plan_path, {"fingerprint": fingerprint, "config": resolved, "inputs": input_info,
                                "shards": [dataclasses.asdict(s) for s in shards],
                                "stage_tasks": readers.one_pass_groups(shards)})
    if progress and cfg.quality.enabled and not cfg.quality.reference:
        print("[curate] quality buckets off: set quality.reference to JSONL files of high-quality text "
              "(quality_bucket will be null and heuristics apply to every document)", file=sys.stderr)
    _train_quality(out, cfg, shards)
    n = len(shards)
    t0 = time.time()
    seconds = {"plan_and_train_quality": round(t0 - t_start, 2)}
    ctx = load_context(out)
    todo = [t for t, group in enumerate(ctx.tasks) if any(not _marker(out, "stage", i).is_file() for i in group)]
    run_tasks(stage_task, ctx, todo, cfg.executor, "stage", progress,
              "tasks" if len(ctx.tasks) < n else "shards")  # a compressed file's shards are one task
    seconds["stage"] = round(time.time() - t0, 2)
    t1 = time.time()
    summary = (json.loads((_work(out) / "decisions" / "summary.json").read_text())
               if _marker(out, "decide").is_file() else decide(out, cfg, n))
    seconds["decide"] = round(time.time() - t1, 2)
    t1 = time.time()
    todo = [i for i in range(n) if not _marker(out, "finish", i).is_file()]
    run_tasks(finish_shard, ctx, todo, cfg.executor, "finish", progress)
    seconds["finish"] = round(time.time() - t1, 2)
    seconds["total_this_invocation"] = round(time.time() - t_start, 2)
    manifest = _manifest(out, resolved, input_info, shards, summary, seconds)
    if (_work(out) / "quality" / "done").is_file():
        shutil.copytree(_work(out) / "quality", out / "quality", dirs_exist_ok=True)
    _write_json(out / "manifest.json", manifest)
    shutil.rmtree(_work(out))
    return manifest


def _merge(into: dict, add: dict) -> None:
    for k, v in add.items():
        if isinstance(v, dict):
            _merge(into.setdefault(k, {}), v)
        else:
            into[k] = into.get(k, 0) + v


def _manifest(out: Path, resolved: dict, input_info: list, shards: list[readers.Shard], summary: dict,
              seconds: dict) -> dict:
    from hytron import __version__

    total: dict = {}
    n_shards = len(shards)
    for i in range(n_shards):
        _merge(total, json.loads((_work(out) / "stats" / f"shard-{i:05d}.json").read_text()))
    by_input = total.pop("by_input", {})
    for info in input_info:  # every input file with its records: a file that gave none says so
        info["records"] = by_input.get(info["path"], {"kept": 0, "removed": {}})
    n_removed = sum(sum(r.values()) for r in total.get("removed", {}).values())
    training = _work(out) / "quality" / "training.json"
    return {
        "format": FORMAT_VERSION, "generator": "hytron.data.pipeline", "hytron_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": seconds,
        "inputs": input_info, "config": resolved, "shards": n_shards,
        "profile": {"name": resolved["profile"], "steps": list(STEPS),
                    "heuristic_rules": [r.__name__ for r in filters.PROFILES[resolved["profile"]]]},
        "counts": {"input": total.get("input", 0), "kept": total.get("kept", 0), "removed": n_removed,
                   "synthetic": sum(total.get("synthetic", {}).values())},
        "balanced": total.get("input", 0) == total.get("kept", 0) + n_removed,
        "removed_by_step": {s: total["removed"][s] for s in STEPS if s in total.get("removed", {})},
        "kept_by_source_bucket": total.get("kept_by_source_bucket", {}),
        "tokens_by_source_bucket": total.get("tokens_by_source_bucket", {}),
        "tokens_note": "approximate tokens: word and punctuation pieces (hytron.data.document.approx_tokens)",
        "pii_redacted": total.get("pii_redacted", {}), "unicode_repaired": total.get("unicode_repaired", 0),
        "kept_with_code": total.get("kept_with_code", 0),  # kept docs with code blocks (meta.code_share)
        "synthetic_by_style": total.get("synthetic", {}),
        "quality": {"thresholds": summary.get("quality_thresholds"),
                    "training": json.loads(training.read_text()) if training.is_file() else None},
        "outputs": {"kept": "kept/", "removed": "removed/", "synthetic": "synthetic/", "quality_models": "quality/"},
    }


def explain(out_dir: str | Path, doc_id: str) -> dict | None:
    """The kept or removed record of `doc_id` (text shortened), with `status`; None if the id is unknown."""
    for kind in ("removed", "kept"):
        for rec in iter_records(out_dir, kind):
            if rec["id"] == doc_id:
                text = rec["text"]
                rec["text"] = text if len(text) <= 300 else text[:300] + f"... [{len(text)} chars]"
                rec["status"] = kind
                return rec
    return None
