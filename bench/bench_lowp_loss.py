"""Benchmark: validation-loss gap of each precision recipe vs fp32, pre-training one tiny hybrid on TinyWeb.

One run, same seeds, same batches, same tokens for every recipe; only the precision differs. Pipeline:
TinyWeb crawl -> byte-level BPE -> packed shards -> hytron-tiny HybridLM (Mamba-2 + attention + MLP)
trained with AdamW and a warmup-stable-decay schedule (the pre-training defaults of recipes/tiny.yaml),
`convert(model, recipe)` applied before the optimizer. Reports, per recipe: final validation loss, its
relative gap to fp32 (the paper's metric; goal for nvfp4 <= 1.5%), and step time vs fp32. Writes the
curves as JSON and an SVG plot. Also runs `nvfp4+switch`: nvfp4 with the forward pass switched to high
precision for the last 20% of steps (paper App. D). Relative gaps are printed last.

The training loop is written out here (top to bottom, ~30 lines) so the benchmark isolates numerics;
`hytron pretrain --set precision=nvfp4` runs the same recipes through the full pre-training loop.

    python bench/bench_lowp_loss.py [--steps 300] [--docs 2000] [--recipes fp32,nvfp4,...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from hytron.data.mix import Blend
from hytron.data.tinyweb import generate
from hytron.lowp import PrecisionRecipe, convert, precision_summary, set_high_precision
from hytron.model import HybridConfig, HybridLM
from hytron.packing import PackedLoader, iter_eval_batches, iter_texts, pack
from hytron.tokenizer import Tokenizer

DEFAULT_RECIPES = ("fp32,nvfp4,mxfp4,nvfp4-no-rht,nvfp4-no-sr,nvfp4-1d-weights,nvfp4-all-layers,"
                   "nvfp4+switch,fp8,mxfp8,bf16")


def build_data(work: Path, docs: int, vocab: int) -> tuple[Path, int]:
    generate(work / "tinyweb", n_docs=docs, seed=0)
    corpus = work / "tinyweb" / "corpus"
    tok = Tokenizer.train(iter_texts([corpus]), vocab_size=vocab)
    blend = Blend.from_mapping({"inputs": [str(corpus)], "components": [{"name": "all", "weight": 1.0}],
                                "validation_fraction": 0.05})
    index = pack(blend, tok, work / "packed")
    splits = index["splits"]
    n_train, n_val = splits["train"]["num_tokens"], splits["val"]["num_tokens"]
    print(f"TinyWeb: {docs} docs, {n_train:,} train / {n_val:,} val tokens, vocab {tok.vocab_size}")
    return work / "packed", tok.vocab_size


def lr_at(step: int, steps: int, lr: float, warmup: int, decay_fraction: float, min_ratio: float) -> float:
    """Warmup-stable-decay: linear warmup, constant, then linear decay to min_ratio * lr over the tail."""
    if step < warmup:
        return lr * (step + 1) / warmup
    decay_start = int(steps * (1 - decay_fraction))
    if step < decay_start:
        return lr
    frac = (step - decay_start) / max(1, steps - decay_start)
    return lr * (1 - (1 - min_ratio) * frac)


@torch.no_grad()
def val_loss(model: HybridLM, data: Path, seq: int, batch: int, max_batches: int) -> float:
    model.eval()
    total, n = 0.0, 0
    for x, y in iter_eval_batches(data, seq, batch, max_batches=max_batches):
        total += model.loss(x, y).item() * y.numel()
        n += y.numel()
    model.train()
    return total / n


def train_one(name: str, data: Path, vocab: int, args) -> dict:
    """Pre-train hytron-tiny under one recipe; returns its curves and timing."""
    switch = name.endswith("+switch")
    recipe_name = name.removesuffix("+switch")
    torch.manual_seed(args.seed)
    model = HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=vocab))
    recipe = None
    if recipe_name != "fp32":
        recipe = PrecisionRecipe.from_name(recipe_name, high_precision_from=0.8 if switch else None)
        convert(model, recipe)
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=args.lr, betas=(0.9, 0.95))
    loader = PackedLoader(data, args.seq, args.batch, seed=args.seed)
    curve, evals, step_times = [], [], []
    for step in range(args.steps):
        if recipe is not None and recipe.should_switch(step, args.steps):
            set_high_precision(model, True, passes=recipe.high_precision_passes)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup, 0.2, 0.1)
        x, y = next(loader)
        t0 = time.perf_counter()
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step_times.append(time.perf_counter() - t0)
        curve.append(loss.item())
        if not math.isfinite(curve[-1]):
            print(f"  {name}: loss diverged at step {step}")
            break
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            evals.append((step + 1, val_loss(model, data, args.seq, args.batch, args.eval_batches)))
    step_times.sort()
    result = {"train_loss": curve, "val": evals, "final_val": evals[-1][1] if evals else float("nan"),
              "step_time_median": step_times[len(step_times) // 2],
              "layers": precision_summary(model)}
    print(f"  {name:18s} final val {result['final_val']:.4f}  "
          f"step {result['step_time_median'] * 1e3:.0f} ms  {result['layers']}", flush=True)
    return result


def svg_plot(series: dict[str, list[tuple[float, float]]], path: Path, title: str, ylabel: str) -> None:
    """Line plot of named (x, y) series as a dependency-free SVG."""
    w, h, pad = 780, 480, 64
    series = {n: [(x, y) for x, y in pts if math.isfinite(y)] for n, pts in series.items()}
    series = {n: pts for n, pts in series.items() if pts}
    xs = [x for pts in series.values() for x, _ in pts]
    ys = sorted(y for pts in series.values() for _, y in pts)
    x0, x1, y0, y1 = min(xs), max(xs), ys[0], ys[-1]
    y1 = min(y1, ys[len(ys) // 2] + 3 * (ys[len(ys) // 2] - y0) + 1e-9)  # clip early-training spikes
    sx = lambda x: pad + (x - x0) / max(1e-9, x1 - x0) * (w - 2 * pad)
    sy = lambda y: h - pad - (min(y, y1) - y0) / max(1e-9, y1 - y0) * (h - 2 * pad)
    colors = ["#000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
              "#bcbd22", "#17becf", "#aa3377"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#444"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#444"/>',
           f'<text x="{w / 2}" y="{h - 22}" text-anchor="middle">step</text>',
           f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" text-anchor="middle">'
           f'{ylabel}</text>']
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{pad - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
        x = x0 + (x1 - x0) * i / 4
        out.append(f'<text x="{sx(x):.1f}" y="{h - pad + 16}" text-anchor="middle">{x:.0f}</text>')
    if y0 < 0 < y1:  # the reference level of a gap plot
        out.append(f'<line x1="{pad}" y1="{sy(0):.1f}" x2="{w - pad}" y2="{sy(0):.1f}" stroke="#999" '
                   f'stroke-dasharray="4 4"/>')
    for i, (name, pts) in enumerate(series.items()):
        c = colors[i % len(colors)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{line}"/>')
        out.append(f'<text x="{w - pad - 130}" y="{pad + 15 * i}" fill="{c}">{name}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 is often "
                    "faster on an oversubscribed machine")
    ap.add_argument("--recipes", default=DEFAULT_RECIPES)
    ap.add_argument("--out", default="runs/bench_lowp_loss", help="JSON + SVG go here")
    ap.add_argument("--resume", action="store_true", help="keep recipes already in OUT/results.json from a "
                    "run with the same settings (finish a long list over several runs)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {k: v for k, v in vars(args).items() if k not in ("recipes", "out", "resume", "threads")}
    results = {}
    if args.resume and (out / "results.json").exists():
        saved = json.loads((out / "results.json").read_text())
        if {k: saved["args"].get(k) for k in settings} != settings:
            raise SystemExit(f"--resume: {out / 'results.json'} has other settings: {saved['args']}")
        results = saved["results"]
        print(f"resuming: {', '.join(results)} already measured")
    names = args.recipes.split(",")
    if names[0] != "fp32":
        names = ["fp32", *[n for n in names if n != "fp32"]]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps x "
          f"{args.batch} x {args.seq} = {args.steps * args.batch * args.seq:,} tokens per recipe")
    with tempfile.TemporaryDirectory() as tmp:
        data, vocab = build_data(Path(tmp), args.docs, args.vocab)
        for name in names:
            if name in results:
                continue
            results[name] = train_one(name, data, vocab, args)
            # written after every recipe, so an interrupted run keeps what it measured
            (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    results = {n: results[n] for n in names if n in results}
    base = results["fp32"]
    fp32_at = dict(base["val"])
    svg_plot({n: r["val"] for n, r in results.items()}, out / "val_loss.svg",
             "hytron-tiny on TinyWeb: validation loss by precision recipe", "validation loss (nats/token)")
    svg_plot({n: [(s, 100 * (v - fp32_at[s]) / fp32_at[s]) for s, v in r["val"] if s in fp32_at]
              for n, r in results.items() if n != "fp32"}, out / "val_gap.svg",
             "validation loss gap vs fp32 (same seeds, batches, tokens)", "relative gap (%)")
    print(f"\nwrote {out / 'results.json'}, {out / 'val_loss.svg'} and {out / 'val_gap.svg'}")
    print(f"{'recipe':18s} {'final val':>9s} {'gap vs fp32':>11s} {'step time':>10s}")
    for name, r in results.items():
        gap = (r["final_val"] - base["final_val"]) / base["final_val"]
        print(f"{name:18s} {r['final_val']:9.4f} {gap * 100:10.2f}% "
              f"{r['step_time_median'] / base['step_time_median']:9.2f}x")


if __name__ == "__main__":
    main()
