"""Where curation shard tasks run: inline, on local worker processes, or as Ray tasks.

A task is `fn(out_dir, shard_index)`: everything else (plan, config, models) it reads from `out_dir`, so
tasks are tiny to ship and any executor gives the same files. Ray is optional (`pip install hytron[ray]`);
on a multi-node cluster OUT must be on storage every node can reach.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

from hytron.data.curate_config import ExecutorConfig


def worker_count(cfg: ExecutorConfig) -> int:
    return cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)


def run_tasks(fn: Callable[[str, int], None], out_dir: str, indices: list[int], cfg: ExecutorConfig,
              label: str, progress: bool = True, unit: str = "shards") -> None:
    """Run `fn(out_dir, i)` for each i; raises the first task error after the others finish."""
    if not indices:
        return
    total = len(indices)

    def report(done: int) -> None:
        if progress:
            print(f"[curate] {label}: {done}/{total} {unit}", file=sys.stderr, flush=True)

    if cfg.kind == "ray":
        _run_ray(fn, out_dir, indices, cfg, report)
        return
    workers = min(worker_count(cfg), total)
    if workers <= 1:
        for k, i in enumerate(indices):
            fn(out_dir, i)
            report(k + 1)
        return
    errors = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, out_dir, i) for i in indices]
        for k, fut in enumerate(as_completed(futures)):
            try:
                fut.result()
            except Exception as e:  # noqa: BLE001 - collected, re-raised below with the others' work saved
                errors.append(e)
            report(k + 1)
    if errors:
        raise errors[0]


def _run_ray(fn, out_dir: str, indices: list[int], cfg: ExecutorConfig, report) -> None:
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
        pending = [remote.remote(out_dir, i) for i in indices]
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)
            done += 1
            report(done)
    finally:
        if started:
            ray.shutdown()
