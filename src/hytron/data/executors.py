"""Where curation shard tasks run: inline, on local worker processes, or as Ray tasks.

A task is `fn(ctx, index)`: `ctx` (the run's plan, config and models, hytron.data.steps.Context) is built once
by the driver and passed explicitly: called inline, pickled with each task to a worker process, put once in Ray's
object store. Tasks write their results under OUT, so any executor gives the same files. Ray is optional
(`pip install hytron[ray]`); on a multi-node cluster OUT must be on storage every node can reach.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from hytron.data.curate_config import ExecutorConfig


def worker_count(cfg: ExecutorConfig) -> int:
    return cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)


def run_tasks(fn: Callable[[Any, int], None], ctx: Any, indices: list[int], cfg: ExecutorConfig,
              label: str, progress: bool = True, unit: str = "shards") -> None:
    """Run `fn(ctx, i)` for each i; raises the first task error after the others finish."""
    if not indices:
        return
    total = len(indices)

    def report(done: int) -> None:
        if progress:
            print(f"[curate] {label}: {done}/{total} {unit}", file=sys.stderr, flush=True)

    if cfg.kind == "ray":
        _run_ray(fn, ctx, indices, cfg, report)
        return
    workers = min(worker_count(cfg), total)
    if workers <= 1:
        for k, i in enumerate(indices):
            fn(ctx, i)
            report(k + 1)
        return
    errors = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, ctx, i) for i in indices]
        for k, fut in enumerate(as_completed(futures)):
            try:
                fut.result()
            except Exception as e:  # noqa: BLE001 - collected, re-raised below with the others' work saved
                errors.append(e)
            report(k + 1)
    if errors:
        raise errors[0]


def _run_ray(fn, ctx, indices: list[int], cfg: ExecutorConfig, report) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("executor.kind is 'ray' but Ray is not installed: pip install 'hytron[ray]'") from None
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, **kwargs)
        else:
            ray.init(num_cpus=worker_count(cfg), **kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        ctx_ref = ray.put(ctx)  # once, not once per task
        pending = [remote.remote(ctx_ref, i) for i in indices]
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)
            done += 1
            report(done)
    finally:
        if started:
            ray.shutdown()
