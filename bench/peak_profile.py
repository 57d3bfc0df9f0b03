"""The measured fp32 GEMM peak and torch.profiler tables per op and per op kind, for the model benchmarks.

Not a benchmark itself: `bench_model.py` and `bench_prefill.py` import it (run from the repo root as
`python bench/bench_X.py`, which puts bench/ on sys.path).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

# op kinds, matched on the aten op name (self time, so a wrapper such as aten::linear or aten::matmul counts only
# its own dispatch, and the mm/bmm it calls counts as GEMM)
KINDS = (
    ("GEMM", ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm")),
    ("attention (SDPA)", ("scaled_dot_product", "flash_attention")),
    ("conv1d", ("convolution",)),
    ("optimizer (foreach)", ("aten::_foreach",)),
    ("copy / layout", ("aten::copy_", "aten::clone", "aten::cat", "aten::_to_copy", "aten::contiguous",
                       "aten::fill_", "aten::zero_", "aten::empty", "aten::index", "aten::constant_pad")),
    ("reductions", ("aten::sum", "aten::mean", "aten::cumsum", "aten::_log_softmax", "aten::nll_loss",
                    "aten::max", "aten::norm")),
    ("elementwise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::exp", "aten::silu", "aten::pow",
                     "aten::rsqrt", "aten::softplus", "aten::clamp", "aten::where", "aten::neg", "aten::sigmoid",
                     "aten::masked_fill", "aten::tril", "aten::threshold", "aten::gelu", "aten::relu")),
)


def load() -> str:
    """The 1/5/15-minute load averages, to print beside every figure (the machines are shared)."""
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def matmul_peak_flops(n: int = 1536, reps: int = 8) -> float:
    """FLOP/s of the best of `reps` fp32 n x n x n matmuls at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def kind_of(name: str) -> str:
    if name.startswith(("autograd::", "Optimizer.", "ProfilerStep")) or "Backward" in name:
        return "autograd / dispatch"
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return "other"


def profile_ops(fn: Callable[[], object], reps: int = 5) -> tuple[list[dict], float]:
    """Profile `reps` calls of `fn`, each in its own torch.profiler session: per-op rows {op, kind, calls, ms, gflop}
    for one call (self CPU time, the median over the sessions, so that a call preempted by another process on a
    shared machine does not inflate one op; the FLOPs torch.profiler counts), biggest first, and the median wall
    seconds per call.

    Times and FLOPs come from separate sessions: counting FLOPs records every op's shapes, which made the
    profiled ops 2-4x slower (measured), so the timed sessions count nothing."""
    fn()  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as counted:
        fn()
    flops = {e.key: (e.flops or 0) / e.count for e in counted.key_averages() if e.count}
    times: dict[str, list[float]] = {}
    calls: dict[str, int] = {}
    walls = []
    for _ in range(reps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t0)
        for e in prof.key_averages():
            times.setdefault(e.key, []).append(e.self_cpu_time_total / 1e3)
            calls[e.key] = e.count
    rows = [{"op": k, "kind": kind_of(k), "calls": calls[k], "ms": statistics.median(v + [0.0] * (reps - len(v))),
             "gflop": flops.get(k, 0.0) * calls[k] / 1e9} for k, v in times.items()]
    rows = sorted((r for r in rows if r["ms"] > 0), key=lambda r: -r["ms"])
    return rows, statistics.median(walls)


def by_kind(rows: list[dict]) -> list[dict]:
    """The per-op rows summed per op kind, biggest first."""
    kinds: dict[str, dict] = {}
    for r in rows:
        k = kinds.setdefault(r["kind"], {"kind": r["kind"], "calls": 0.0, "ms": 0.0, "gflop": 0.0})
        for f in ("calls", "ms", "gflop"):
            k[f] += r[f]
    return sorted(kinds.values(), key=lambda k: -k["ms"])


def print_table(rows: list[dict], peak: float, key: str = "op", top: int = 12, log=print) -> None:
    """A markdown table: op (or kind), calls, ms, share of the profiled time, GFLOP/s and % of `peak` (FLOP/s)."""
    total = sum(r["ms"] for r in rows)
    log(f"| {key} | calls | ms | share | GFLOP/s | % of GEMM peak |")
    log("|---|---|---|---|---|---|")
    for r in rows[:top]:
        rate = r["gflop"] / (r["ms"] / 1e3) if r["gflop"] and r["ms"] else 0.0
        pct = f"{100 * rate * 1e9 / peak:.0f}%" if rate else ""
        log(f"| {r[key]} | {r['calls']:.0f} | {r['ms']:.2f} | {100 * r['ms'] / total:.1f}% | "
            f"{f'{rate:.1f}' if rate else ''} | {pct} |")
    if len(rows) > top:
        rest = rows[top:]
        log(f"| ({len(rest)} more) | {sum(r['calls'] for r in rest):.0f} | {sum(r['ms'] for r in rest):.2f} | "
            f"{100 * sum(r['ms'] for r in rest) / total:.1f}% | | |")
