"""Model card and data card for a trained model: facts gathered from the run, written beside the weights.

`write_cards(model_dir, run_dir)` writes three files into the model directory:

    README.md       the model card (Hugging Face convention: YAML front matter + Markdown): architecture and
                    size, the resolved training config, training tokens and final validation metrics, the
                    evaluation table (from `eval.json` when `hytron eval` has run), intended use and limits
    DATA_CARD.md    the data card: blend and weights, tokens per split / component / source / quality bucket,
                    SHA-256 of every packed shard and of the tokenizer, and for each curated input the curation
                    manifest (input file hashes, counts kept and removed per step and reason)
    card.json       every fact above as JSON (what the report and tests read)

Everything is read from files (model dir, run dir, the packed-data dir named in the run's config, curation
manifests next to the blend's inputs); nothing is typed in by hand. Missing pieces are named in the card as
missing rather than guessed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hytron.data.io import write_json, write_text
from hytron.train.metrics import read_metrics

CARD_FORMAT = 1

INTENDED_USE = (
    "A tiny research and teaching model trained with hytron, to study the Nemotron recipe (data curation, "
    "hybrid Mamba-2/Transformer architecture, low-precision training, reasoning post-training) at laptop scale.")
LIMITS = [
    "Trained on very few tokens of (mostly synthetic) text: it is not a useful assistant and its statements "
    "are not reliable facts.",
    "Not evaluated for safety, bias or toxicity; do not deploy it to users.",
    "Evaluation numbers are from small held-out sets of the training corpus's own distribution; they do not "
    "transfer to other text.",
    "English only (curation keeps English).",
]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(data: Any) -> str:
    """Hash of a JSON value in canonical form (sorted keys, no spaces): the identity of a config."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def model_facts(model_dir: str | Path) -> dict:
    """Architecture and size of a Nemotron-H model directory, plus the hashes of its files."""
    from hytron.model.hf import load_config

    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    counts = cfg.block_counts()
    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".json")
                   and p.name not in ("card.json", "eval.json"))
    return {
        "name": cfg.name, "pattern": cfg.pattern, "layers": cfg.num_layers, "block_counts": counts,
        "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size,
        "parameters": cfg.num_params(), "active_parameters": cfg.num_params(active=True),
        "parameters_without_embeddings": cfg.num_params(embeddings=False),
        "max_position_embeddings": cfg.max_position_embeddings,
        "inference_state_bytes_at_4k": cfg.inference_state_bytes(4096),
        "config": cfg.to_dict(),
        "files": {p.name: sha256_file(p) for p in files},
    }


def curation_manifest_for(input_path: str | Path) -> Path | None:
    """The curation manifest behind a blend input: DIR/manifest.json for DIR or DIR/kept or a file in them."""
    p = Path(input_path)
    for d in (p, p.parent, p.parent.parent):
        if (d / "manifest.json").is_file():
            return d / "manifest.json"
    return None


def curation_facts(manifest_path: Path) -> dict:
    m = _read_json(manifest_path) or {}
    return {
        "manifest": str(manifest_path), "manifest_sha256": sha256_file(manifest_path),
        "config_sha256": sha256_json(m.get("config", {})),
        "inputs": [{k: i.get(k) for k in ("path", "sha256", "bytes")} for i in m.get("inputs", [])],
        "counts": m.get("counts", {}), "removed_by_step": m.get("removed_by_step", {}),
        "kept_by_source_bucket": m.get("kept_by_source_bucket", {}),
        "synthetic_by_style": m.get("synthetic_by_style", {}), "pii_redacted": m.get("pii_redacted", {}),
        "profile": m.get("profile", {}), "heuristics": m.get("config", {}).get("heuristics", {}),
    }


def data_facts(data_dir: str | Path) -> dict:
    """Blend, token counts and hashes of a packed-data directory, with the curation manifests of its inputs."""
    data_dir = Path(data_dir)
    index = _read_json(data_dir / "index.json")
    if index is None:
        return {"path": str(data_dir), "missing": f"no packed-data index at {data_dir / 'index.json'}"}
    shards = {}
    for s in index.get("splits", {}).values():
        for comp in s.get("components", {}).values():
            for shard in comp.get("shards", []):
                rel = shard.get("path")
                f = data_dir / rel if rel else None
                if f is not None and f.is_file():
                    shards[rel] = sha256_file(f)
    manifests, seen = [], set()
    for inp in index.get("blend", {}).get("inputs", []):
        mp = curation_manifest_for(inp)
        if mp is not None and mp not in seen:
            seen.add(mp)
            manifests.append(curation_facts(mp))
    return {
        "path": str(data_dir), "index_sha256": sha256_file(data_dir / "index.json"),
        "tokenizer_sha256": index.get("tokenizer_sha256"), "blend": index.get("blend"),
        "weights": index.get("weights"),
        "splits": {k: {f: v.get(f) for f in ("num_tokens", "num_docs", "num_bytes")}
                   for k, v in index.get("splits", {}).items()},
        "components": {k: {c: cv.get("num_tokens") for c, cv in v.get("components", {}).items()}
                       for k, v in index.get("splits", {}).items()},
        "sources": index.get("sources"), "buckets": index.get("buckets"), "skipped": index.get("skipped"),
        "shards_sha256": shards, "curation": manifests,
        "unmanifested_inputs": [i for i in index.get("blend", {}).get("inputs", []) if not curation_manifest_for(i)],
    }


def run_facts(run_dir: str | Path) -> dict:
    """Resolved config, summary and final metrics of a training run directory."""
    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json")
    summary = _read_json(run_dir / "summary.json") or {}
    metrics = read_metrics(Path(run_dir) / "metrics.jsonl")
    evals = [m for m in metrics if "val_loss" in m]
    train = [m for m in metrics if "loss" in m]
    return {
        "path": str(run_dir), "config": config, "config_sha256": sha256_json(config) if config else None,
        "summary": summary, "tokens": summary.get("tokens") or (train[-1].get("tokens") if train else None),
        "steps": summary.get("step") or (train[-1]["step"] if train else None),
        "final_train_loss": train[-1]["loss"] if train else None,
        "final_val_loss": evals[-1]["val_loss"] if evals else summary.get("val_loss"),
        "final_val_bpb": evals[-1].get("val_bpb") if evals else summary.get("val_bpb"),
        "tok_s_median": _median([m["tok_s"] for m in train if "tok_s" in m]),
    }


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def gather(model_dir: str | Path, run_dir: str | Path | None = None, evals: dict | None = None) -> dict:
    """All facts of both cards as one JSON-able dict."""
    model_dir = Path(model_dir)
    run = run_facts(run_dir) if run_dir is not None else None
    data_path = ((run or {}).get("config") or {}).get("data", {}).get("path")
    if evals is None:
        evals = _read_json(model_dir / "eval.json")
    return {
        "format": CARD_FORMAT, "model": model_facts(model_dir), "run": run,
        "data": data_facts(data_path) if data_path else {"missing": "no training run given: data unknown"},
        "eval": evals, "intended_use": INTENDED_USE, "limits": LIMITS,
    }


# ---------------------------------------------------------------- rendering
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "—"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def eval_rows(evals: dict | None) -> list[list[Any]]:
    """Flatten an eval.json ({"tasks": {task: {metric: value}}}) into (task, metric, value) rows; a flat
    {metric: value} dict (the training loop's last validation) is one task, `validation (training data)`."""
    evals = evals or {}
    tasks = evals.get("tasks")
    if tasks is None:
        tasks = {"validation (training data)": evals}
    rows = []
    for task, res in (tasks or {}).items():
        if isinstance(res, dict):
            for k, v in res.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    rows.append([task, k, v])
    return rows


def render_model_card(facts: dict) -> str:
    m, run = facts["model"], facts.get("run") or {}
    name = m["name"] or "hytron model"
    front = ["---", "library_name: hytron", "license: apache-2.0", "tags: [hytron, nemotron-h, mamba2, hybrid]",
             "---", ""]
    body = [f"# {name} (hytron)", "", "## Intended use", "", facts["intended_use"], "", "## Limits", ""]
    body += [f"- {x}" for x in facts["limits"]]
    body += ["", "## Architecture and size", "",
             _table(["what", "value"], [
                 ["layer pattern", f"`{m['pattern']}` (M = Mamba-2, * = attention, - = MLP, E = MoE)"],
                 ["layers", m["layers"]], ["blocks", ", ".join(f"{k} {v}" for k, v in m["block_counts"].items())],
                 ["hidden size", m["hidden_size"]], ["vocabulary", m["vocab_size"]],
                 ["parameters (total)", f"{m['parameters']:,}"], ["parameters (active)", f"{m['active_parameters']:,}"],
                 ["inference state per sequence at 4k tokens (bytes)",
                  f"{m['inference_state_bytes_at_4k']['total']:,}"]]),
             "", "Weights and config files (SHA-256):", "",
             _table(["file", "sha256"], [[k, f"`{v}`"] for k, v in m["files"].items()])]
    body += ["", "## Training", ""]
    if run:
        body += [_table(["what", "value"], [
            ["run directory", run["path"]], ["steps", run["steps"]], ["tokens", run["tokens"]],
            ["final train loss", run["final_train_loss"]],
            ["final validation loss (nats/token)", run["final_val_loss"]],
            ["final validation bits per byte", run["final_val_bpb"]], ["median tokens/s", run["tok_s_median"]],
            ["resolved config sha256", f"`{run['config_sha256']}`"]]),
            "", "Resolved training config:", "", "```json", json.dumps(run["config"], indent=2, sort_keys=True),
            "```"]
    else:
        body += ["No training run was given, so the recipe is unknown."]
    body += ["", "## Evaluation", ""]
    rows = eval_rows(facts.get("eval"))
    body += [_table(["task", "metric", "value"], rows) if rows else "Not evaluated yet: run `hytron eval MODEL_DIR`."]
    body += ["", "## Data", "", "See `DATA_CARD.md` in this directory."]
    d = facts.get("data") or {}
    if d.get("index_sha256"):
        body += [f"Packed data index sha256 `{d['index_sha256']}`, tokenizer sha256 `{d['tokenizer_sha256']}`."]
    return "\n".join(front + body) + "\n"


def render_data_card(facts: dict) -> str:
    d = facts.get("data") or {}
    out = ["# Data card", ""]
    if d.get("missing"):
        return "\n".join(out + [d["missing"]]) + "\n"
    blend = d.get("blend") or {}
    out += [f"Packed data: `{d['path']}` (index sha256 `{d['index_sha256']}`); tokenizer sha256 "
            f"`{d['tokenizer_sha256']}`.", "", "## Blend", "",
            f"Blend `{blend.get('name')}`, seed {blend.get('seed')}, validation fraction "
            f"{blend.get('validation_fraction')}; inputs: " + ", ".join(f"`{i}`" for i in blend.get("inputs", [])), "",
            _table(["component", "weight", "train tokens", "val tokens"],
                   [[c, (d.get("weights") or {}).get(c), (d["components"].get("train") or {}).get(c),
                     (d["components"].get("val") or {}).get(c)] for c in (d["components"].get("train") or {})])]
    if blend.get("exclude"):
        out += ["", f"Exclusions: `{json.dumps(blend['exclude'], sort_keys=True)}`"]
    out += ["", "## Tokens by source and quality bucket (train split)", "",
            _table(["source", "docs", "tokens"],
                   [[k, v.get("docs"), v.get("tokens")] for k, v in sorted(((d.get("sources") or {}).get("train")
                                                                          or {}).items())]),
            "", _table(["quality bucket", "docs", "tokens"],
                       [[k, v.get("docs"), v.get("tokens")] for k, v in sorted(((d.get("buckets") or {}).get("train")
                                                                              or {}).items())])]
    out += ["", "## Packed shards (SHA-256)", "", _table(["shard", "sha256"],
                                                        [[k, f"`{v}`"] for k, v in sorted(d["shards_sha256"].items())])]
    for c in d.get("curation", []):
        out += ["", f"## Curation: `{c['manifest']}`", "",
                f"Manifest sha256 `{c['manifest_sha256']}`, curation config sha256 `{c['config_sha256']}`. "
                f"Documents: {c['counts'].get('input')} in, {c['counts'].get('kept')} kept, "
                f"{c['counts'].get('removed')} removed, {c['counts'].get('synthetic')} synthetic.", "",
                f"Profile `{c['profile'].get('name', 'web')}`, heuristic rules "
                f"{', '.join(c['profile'].get('heuristic_rules', []))}; thresholds: "
                + ", ".join(f"{k}={v}" for k, v in sorted(c["heuristics"].items())) + ".", "",
                _table(["input file", "bytes", "sha256"], [[i["path"], i["bytes"], f"`{i['sha256']}`"]
                                                            for i in c["inputs"]]),
                "", _table(["step", "reason", "documents removed"],
                           [[s, r, n] for s, reasons in c["removed_by_step"].items() for r, n in reasons.items()])]
        if c.get("synthetic_by_style"):
            out += ["", _table(["rephrasing style", "documents"], list(map(list, c["synthetic_by_style"].items())))]
    if d.get("unmanifested_inputs"):
        out += ["", "Inputs without a curation manifest (not curated by hytron, or moved): "
                + ", ".join(f"`{i}`" for i in d["unmanifested_inputs"])]
    return "\n".join(out) + "\n"


def write_cards(model_dir: str | Path, run_dir: str | Path | None = None, evals: dict | None = None) -> dict:
    """Write README.md (model card), DATA_CARD.md and card.json into `model_dir`; returns the facts."""
    model_dir = Path(model_dir)
    facts = gather(model_dir, run_dir, evals)
    write_json(model_dir / "card.json", facts, indent=1, sort_keys=True)
    write_text(model_dir / "README.md", render_model_card(facts))
    write_text(model_dir / "DATA_CARD.md", render_data_card(facts))
    return facts


def refresh_cards(model_dir: str | Path, evals: dict) -> None:
    """Rewrite a model directory's cards (if it has them) with a new evaluation, keeping the run they describe."""
    card = Path(model_dir) / "card.json"
    if not card.is_file():
        return
    run = (json.loads(card.read_text()).get("run") or {}).get("path")
    write_cards(model_dir, run if run and Path(run).is_dir() else None, evals=evals)
