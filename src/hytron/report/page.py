"""`build_report(run_dir)`: one self-contained HTML page per training run (no network, no external files).

Sections, each drawn only from files the run left behind: summary and architecture (run config, model
config.json), loss curves and throughput (metrics.jsonl), the curation funnel (documents kept and removed
per step and reason, from the curation manifest behind the packed data), the data blend, evaluation tables
and thinking-budget curves (model/eval.json from `hytron eval`), and any claim reproductions given
(`hytron reproduce` folders: headline table and their PNG plots embedded as data URIs).
"""

from __future__ import annotations

import base64
import json
import time
from html import escape
from pathlib import Path

from hytron import __version__
from hytron.data.steps import STEPS as PIPELINE_STEPS
from hytron.report.cards import data_facts, eval_rows, model_facts, run_facts
from hytron.report.charts import bar_chart, line_chart
from hytron.train.metrics import read_metrics

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:980px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5em;margin:.4em 0}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f0f0f0;cursor:pointer}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.chart{background:#fff;border:1px solid #e4e4e4;margin:6px 0;max-width:100%;height:auto}
.chart text{font-size:11px;fill:#333}.chart .t{font-size:13px;font-weight:600}
.chart .ax{stroke:#555}.chart .grid{stroke:#eee}.chart .ref{stroke:#999;stroke-dasharray:4 3}
.muted{color:#777}img.plot{max-width:100%;border:1px solid #e4e4e4;background:#fff}
code{background:#f0f0f0;padding:0 3px}
"""

# sortable tables (click a header); marks the page ready so a headless check knows the script ran
SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, i) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[th.cellIndex].textContent, y = b.cells[th.cellIndex].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      return dir * (isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.documentElement.dataset.ready = String(document.querySelectorAll('svg.chart').length);
"""


def _num(v) -> str:
    if isinstance(v, bool) or v is None:
        return escape(str(v if v is not None else "—"))
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return escape(str(v))


def table(header: list[str], rows: list[list], cls: str = "sortable") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="n">{_num(c)}</td>' if isinstance(c, (int, float)) and not
                                    isinstance(c, bool) else f"<td>{_num(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def funnel(cur: dict) -> tuple[str, str]:
    """(bar chart of documents remaining after each step, table of removals per step and reason)."""
    remaining = cur["counts"].get("input") or 0
    bars = [("input", remaining)]
    rows = []
    order = {s: i for i, s in enumerate(PIPELINE_STEPS)}  # the manifest's keys are sorted; show pipeline order
    for step, reasons in sorted(cur["removed_by_step"].items(), key=lambda kv: order.get(kv[0], len(order))):
        removed = sum(reasons.values())
        remaining -= removed
        bars.append((f"after {step} (-{removed})", remaining))
        rows += [[step, reason, n] for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    if cur["counts"].get("synthetic"):
        bars.append(("+ synthetic (rephrased)", cur["counts"]["synthetic"]))
    chart = bar_chart(bars, title="Curation funnel: documents remaining after each step")
    return chart, table(["step", "reason", "documents removed"], rows)


def _section(title: str, *parts: str) -> str:
    body = "\n".join(p for p in parts if p)
    return f"<section><h2>{escape(title)}</h2>\n{body or '<p class=muted>nothing recorded</p>'}\n</section>"


def run_sections(run_dir: Path) -> list[str]:
    run = run_facts(run_dir)
    metrics = read_metrics(Path(run_dir) / "metrics.jsonl")
    train = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "val_loss" in m]
    cfg = run.get("config") or {}
    out = [_section("Summary", table(["what", "value"], [
        ["run", str(run_dir)], ["steps", run["steps"]], ["tokens", run["tokens"]],
        ["final train loss", run["final_train_loss"]], ["final validation loss (nats/token)", run["final_val_loss"]],
        ["final validation bits per byte", run["final_val_bpb"]], ["median tokens/s", run["tok_s_median"]],
        ["precision", cfg.get("precision")], ["preset", (cfg.get("model") or {}).get("preset")],
        ["resolved config sha256", run["config_sha256"]]], cls="kv"))]
    model_dir = run_dir / "model"
    if (model_dir / "config.json").is_file():
        m = model_facts(model_dir)
        out.append(_section("Model", table(["what", "value"], [
            ["pattern", m["pattern"]], ["layers", m["layers"]], ["parameters", m["parameters"]],
            ["active parameters", m["active_parameters"]], ["hidden size", m["hidden_size"]],
            ["vocabulary", m["vocab_size"]], ["inference state / sequence at 4k (bytes)",
                                             m["inference_state_bytes_at_4k"]["total"]]], cls="kv")))
    out.append(_section(
        "Loss curves",
        line_chart({"train loss": [(t["tokens"], t["loss"]) for t in train],
                    "validation loss": [(e["tokens"], e["val_loss"]) for e in evals]},
                   title="Loss vs training tokens", xlabel="tokens", ylabel="loss (nats/token)"),
        line_chart({"validation bpb": [(e["tokens"], e["val_bpb"]) for e in evals if "val_bpb" in e]},
                   title="Validation bits per byte", xlabel="tokens", ylabel="bits per byte")))
    out.append(_section("Throughput", line_chart({"tokens/s": [(t["step"], t["tok_s"]) for t in train if "tok_s" in t]},
                                                 title="Training throughput", xlabel="step", ylabel="tokens/s")))
    data_path = (cfg.get("data") or {}).get("path")
    if data_path:
        d = data_facts(data_path)
        parts = []
        for cur in d.get("curation", []):
            chart, reasons = funnel(cur)
            c = cur["counts"]
            parts += [f"<p>Manifest <code>{escape(cur['manifest'])}</code>: {c.get('input')} documents in, "
                      f"{c.get('kept')} kept, {c.get('removed')} removed, {c.get('synthetic')} synthetic.</p>",
                      chart, reasons]
        out.append(_section("Curation funnel", *parts))
        if not d.get("missing"):
            train_src = ((d.get("sources") or {}).get("train") or {})
            buckets = ((d.get("buckets") or {}).get("train") or {})
            out.append(_section(
                "Data blend",
                table(["component", "weight", "train tokens"],
                      [[k, (d.get("weights") or {}).get(k), v]
                       for k, v in (d["components"].get("train") or {}).items()]),
                bar_chart([(k, v["tokens"]) for k, v in sorted(train_src.items())], title="Training tokens by source"),
                bar_chart([(f"bucket {k}", v["tokens"]) for k, v in sorted(buckets.items())],
                          title="Training tokens by quality bucket")))
    return out


def eval_sections(evals: dict | None) -> list[str]:
    if not evals:
        return [_section("Evaluation", "<p class=muted>not evaluated: run <code>hytron eval MODEL_DIR</code></p>")]
    parts = [table(["task", "metric", "value"], eval_rows(evals))]
    reasoning = (evals.get("tasks") or {}).get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("curve"):
        parts.append(budget_chart({"model": reasoning}))
    return [_section("Evaluation", *parts)]


def budget_chart(results: dict[str, dict]) -> str:
    """Accuracy vs mean thinking tokens, one line per result with a `curve` of budgets."""
    return line_chart({name: [(c["mean_thinking_tokens"], 100 * c["accuracy"]) for c in
                              sorted(r["curve"], key=lambda c: c["mean_thinking_tokens"])]
                       for name, r in results.items() if r.get("curve")},
                      title="Accuracy vs thinking budget", xlabel="mean thinking tokens per answer",
                      ylabel="accuracy (%)")


def _interval(c: dict) -> str:
    fmt = lambda v: "—" if v is None else f"{v:.4g}"
    ci = c.get("ci95")
    if not ci:
        return f"{fmt(c.get('mean'))} (one seed: no interval)"
    return f"{fmt(c.get('mean'))} [{fmt(ci[0])}, {fmt(ci[1])}]"


def claim_section(claim_dir: Path) -> str:
    res = json.loads((claim_dir / "result.json").read_text())
    head = res["headline"]
    verdict = (f"<p><b>Verdict: {escape(str(res.get('verdict')))}</b> — read off the 95% interval over seeds "
               f"{escape(json.dumps(res.get('seeds')))}, not the mean. Goal: {escape(str(head.get('goal', '')))}</p>")
    criteria = table(["criterion", "per seed", "mean [95% CI]", "threshold", "verdict"],
                     [[c["name"], ", ".join("—" if v is None else f"{v:.4g}" for v in c["per_seed"]), _interval(c),
                       f"{'≥' if c['higher_is_better'] else '≤'} {c['threshold']:g}", c["verdict"]]
                      for c in head.get("criteria", [])])
    rule = f"<p>Acceptance rule (pre-registered): {escape(str(res.get('rule', '')))}</p>"
    gates = table(["validity gate", "value", "rule", "passed"],
                  [[g["name"], json.dumps(g["value"]), g["rule"], "yes" if g["passed"] else "NO"]
                   for g in res.get("gates", [])]) if res.get("gates") else ""
    rows = [[k, v if not isinstance(v, (dict, list)) else json.dumps(v)] for k, v in head.items() if k != "criteria"]
    imgs = []
    for name in res.get("plots", []):
        f = claim_dir / name
        if f.is_file():
            data = base64.b64encode(f.read_bytes()).decode()
            imgs.append(f'<img class="plot" alt="{escape(name)}" src="data:image/png;base64,{data}">')
    return _section(f"Claim: {res['claim']}", verdict, rule, gates, criteria,
                    f"<p class=muted>{res['seconds']} s, settings <code>{escape(json.dumps(res['settings']))}</code>"
                    f", data <code>{escape(json.dumps(res.get('data_hashes', {})))}</code></p>",
                    table(["headline", "value"], rows, cls="kv"), *imgs)


def build_report(run_dir: str | Path, out: str | Path | None = None, claims: list[str | Path] = ()) -> Path:
    """Write the report of `run_dir` (default RUN_DIR/report.html); returns its path."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() and not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir}: not a training run directory (no config.json or metrics.jsonl)")
    evals_path = run_dir / "model" / "eval.json"
    evals = json.loads(evals_path.read_text()) if evals_path.is_file() else None
    sections = run_sections(run_dir) + eval_sections(evals)
    for c in claims:
        c = Path(c)
        if not (c / "result.json").is_file():
            raise FileNotFoundError(f"{c}: no result.json (a `hytron reproduce CLAIM --out DIR` folder)")
        sections.append(claim_section(c))
    title = f"hytron report: {run_dir.name}"
    page = (f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body><main><h1>{escape(title)}</h1><p class=muted>hytron {__version__}, generated "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}. Model and data cards: "
            f"<code>model/README.md</code>, <code>model/DATA_CARD.md</code>.</p>\n" + "\n".join(sections) +
            f"</main><script>{SCRIPT}</script></body></html>\n")
    path = Path(out) if out else run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
