"""Benchmark: training-step time of the low-precision emulation (each recipe) vs fp32 and bf16 nn.Linear.

Two workloads, each a full training step (forward + backward + AdamW):
  1. `mlp`: a residual stack of MLP blocks (d_model x 4 d_model, relu), every block converted, so the
     ratio is the cost of emulating the three quantized GEMMs of each Linear;
  2. `hybrid`: the hytron-tiny HybridLM (Mamba-2 + attention + MLP blocks) converted by each recipe as
     `convert` does in training (first/last blocks per recipe, LM head stays high precision).
Baselines: the unconverted model in fp32, and the same model cast to bf16 (native bf16 nn.Linear).
Rounds are interleaved and the median kept (these machines are shared and noisy). Ratios to fp32 are
printed last. Emulation is expected to cost several times a plain GEMM on CPU: it is for studying
numerics, not for speed (native FP8 on a CUDA GPU is the fast path).

    python bench/bench_lowp_overhead.py [--tokens 2048] [--d-model 256] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from hytron.lowp import RECIPE_NAMES, PrecisionRecipe, convert
from hytron.model import HybridConfig, HybridLM


class MLPStack(nn.Module):
    def __init__(self, blocks: int, d: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 4 * d, bias=False), nn.ReLU(), nn.Linear(4 * d, d, bias=False))
            for _ in range(blocks))

    def forward(self, x):
        for block in self.layers:
            x = x + block(x)
        return x


def build(workload: str, recipe: str, args) -> tuple[nn.Module, callable]:
    """(model, step function) for one workload under one recipe ('fp32', 'bf16-native' or a lowp recipe)."""
    torch.manual_seed(0)
    if workload == "mlp":
        model = MLPStack(args.blocks, args.d_model)
        x = torch.randn(args.tokens, args.d_model)
        loss_fn = lambda m: m(x.to(next(m.parameters()).dtype)).float().square().mean()
    else:
        model = HybridLM(HybridConfig.from_name("hytron-tiny"))
        ids = torch.randint(0, model.config.vocab_size, (args.tokens // 256, 256))
        targets = ids.roll(-1, 1).flatten()
        loss_fn = lambda m: nn.functional.cross_entropy(m(ids).float().flatten(0, 1), targets)
    if recipe == "bf16-native":
        model = model.to(torch.bfloat16)
    elif recipe != "fp32":
        # keep_last / keep_first as each recipe says for the hybrid; the MLP stack converts every block
        overrides = {"keep_first": 0, "keep_last": 0} if workload == "mlp" else {}
        convert(model, PrecisionRecipe.from_name(recipe, **overrides))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = loss_fn(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return model, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per round")
    ap.add_argument("--workloads", default="mlp,hybrid")
    ap.add_argument("--recipes", default=",".join(r for r in RECIPE_NAMES if r != "fp32"))
    ap.add_argument("--json", default=None, help="write the medians here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipes = ["fp32", "bf16-native", *args.recipes.split(",")]
    workloads = args.workloads.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tokens/step {args.tokens}")

    steppers = {}
    for w in workloads:
        for r in recipes:
            _, step = build(w, r, args)
            step()  # warm-up (allocations, weight cache, first-touch)
            steppers[(w, r)] = step
    times: dict[tuple[str, str], list[float]] = {k: [] for k in steppers}
    for rnd in range(args.rounds):
        for key, step in steppers.items():  # interleaved: every config sees the same machine noise
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[key].append((time.perf_counter() - t0) / args.steps)
        print(f"round {rnd + 1}/{args.rounds} done", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    for w in workloads:
        print(f"\n{w}: median step time (ms)")
        for r in recipes:
            print(f"  {r:18s} {med[(w, r)] * 1e3:9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{w}/{r}": med[(w, r)] for w, r in med}, f, indent=2)
    print("\nratios (step time / fp32 nn.Linear step time):")
    for w in workloads:
        base = med[(w, "fp32")]
        print(f"  {w}: " + ", ".join(f"{r} {med[(w, r)] / base:.2f}x" for r in recipes[1:]))


if __name__ == "__main__":
    main()
