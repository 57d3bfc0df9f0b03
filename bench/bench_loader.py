"""Benchmark: PackedLoader overhead vs a plain numpy-slice loader, and as a share of a training step (CPU).

Builds its own data: a TinyWeb crawl -> a 4k byte-level BPE tokenizer -> packed shards in two blend
components. Then, interleaved (these machines are shared and noisy), takes the median of several timed
rounds of:
  1. `PackedLoader` (blended, seeded, resumable) batches/s;
  2. the baseline: nanoGPT-style random slices of one uint16 memmap stacked into int64 tensors;
  3. one training step (forward + backward + AdamW) of the quickstart model (`hytron-small`) on the same
     batch shape, so the loader's cost is also reported as a fraction of a step (goal < 2%).
Ratios are printed last.

    python bench/bench_loader.py [--docs 4000] [--seq 512] [--batch 8] [--rounds 5] [--batches 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hytron.data.mix import Blend
from hytron.data.tinyweb import generate
from hytron.packing import PackedLoader, iter_texts, pack
from hytron.tokenizer import Tokenizer


def build(work: Path, docs: int) -> Path:
    generate(work / "tinyweb", n_docs=docs, seed=0)
    corpus = work / "tinyweb" / "corpus"
    tok = Tokenizer.train(iter_texts([corpus]), vocab_size=4096)
    blend = Blend.from_mapping({"inputs": [str(corpus)], "components": [
        {"name": "encyclopedia", "weight": 0.6, "sources": ["tinyweb/encyclopedia"]},
        {"name": "rest", "weight": 0.4}]})
    t0 = time.perf_counter()
    index = pack(blend, tok, work / "packed")
    seconds = time.perf_counter() - t0
    print(f"packed {index['splits']['train']['num_tokens']:,} tokens from {docs:,} docs in {seconds:.2f}s "
          f"({index['splits']['train']['num_tokens'] / seconds:,.0f} tokens/s)")
    return work / "packed"


def time_packed(data: Path, seq: int, batch: int, n: int) -> float:
    loader = PackedLoader(data, seq, batch, seed=0)
    next(loader)  # open memmaps, first permutation
    t0 = time.perf_counter()
    for _ in range(n):
        next(loader)
    return (time.perf_counter() - t0) / n


def time_numpy_baseline(data: Path, seq: int, batch: int, n: int) -> float:
    shard = json.loads((data / "index.json").read_text())["splits"]["train"]["components"]["rest"]["shards"][0]
    tokens = np.memmap(data / shard["path"], dtype=np.uint16, mode="r")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n):
        ix = rng.integers(0, len(tokens) - seq - 1, size=batch)
        x = torch.from_numpy(np.stack([tokens[i:i + seq].astype(np.int64) for i in ix]))
        y = torch.from_numpy(np.stack([tokens[i + 1:i + 1 + seq].astype(np.int64) for i in ix]))
        del x, y
    return (time.perf_counter() - t0) / n


def time_train_step(data: Path, seq: int, batch: int, steps: int) -> float | None:
    try:
        from hytron.model import HybridConfig, HybridLM
    except ImportError:
        return None
    model = HybridLM(HybridConfig.from_name("hytron-small"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = next(PackedLoader(data, seq, batch, seed=1))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--steps", type=int, default=3, help="training steps timed (0 to skip)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        data = build(Path(tmp), args.docs)
        ours, base = [], []
        for _ in range(args.rounds):
            ours.append(time_packed(data, args.seq, args.batch, args.batches))
            base.append(time_numpy_baseline(data, args.seq, args.batch, args.batches))
        step = time_train_step(data, args.seq, args.batch, args.steps) if args.steps else None
    ours_s, base_s = statistics.median(ours), statistics.median(base)
    print(f"batch {args.batch} x seq {args.seq}, median of {args.rounds} rounds of {args.batches} batches")
    print(f"  PackedLoader      {1 / ours_s:10,.0f} batches/s  {ours_s * 1e6:8.1f} us/batch")
    print(f"  numpy baseline    {1 / base_s:10,.0f} batches/s  {base_s * 1e6:8.1f} us/batch")
    if step is not None:
        print(f"  hytron-small train step {step * 1e3:.1f} ms (fwd+bwd+AdamW, {torch.get_num_threads()} threads)")
    if step is not None:
        print(f"loader share of a training step: {100 * ours_s / (step + ours_s):.3f}% (goal < 2%)")
    print(f"ratio PackedLoader/numpy time per batch: {ours_s / base_s:.2f}x")


if __name__ == "__main__":
    main()
