"""Small-scale reproductions of the stack's four headline claims, each one command: `hytron reproduce CLAIM`.

    from hytron.claims import run_claim
    result = run_claim("data", "runs/claims/data", quick=True, seeds=2)   # writes result.json + PNG plots

Claims: `data` (curated data converges faster), `hybrid` (hybrid decodes faster with less memory than pure
attention), `nvfp4` (4-bit training stays close to higher precision), `reasoning` (shorter reasoning at
equal accuracy). Each module has a FULL and a QUICK (CI) size, a pre-registered acceptance rule `RULE` and
validity gates, and either `run_seed(out, settings, seed)` + `summarize(out, settings, records, started)` (one
run per seed, the data regenerated from the seed; `jobs` runs seeds in parallel processes) or, for timing
rounds that must not overlap, `run(out, quick, settings, seeds)`. `result.json` holds the per-seed values,
their mean and 95% interval (ratios on the log scale), the gates, and a verdict read off the interval, or
"not valid" when a gate failed (`hytron.claims.stats`), with the settings, data hashes and overlap checks.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from hytron.config import apply_overrides, from_dict

CLAIMS = ("data", "hybrid", "nvfp4", "reasoning")


DEFAULT_SEEDS = {"full": 3, "quick": 2}  # two seeds is the fewest that give an interval


def run_claim(name: str, out: str | Path, quick: bool = False, seeds: int | None = None,
              overrides: list[str] | None = None, jobs: int = 1, threads: int = 0, log=print, **kwargs) -> dict:
    """Run claim `name` into `out`; `overrides` (`--set` items: `recipes=[bf16, nvfp4]`, `run.steps=100`) change
    fields of its FULL (or QUICK) settings, validated.
    `jobs` > 1 runs seeds in that many processes (`threads` torch threads each); a seed whose record is
    already in OUT/seed{k}/record.json (same settings) is not run again."""
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; known: {', '.join(CLAIMS)}")
    module = importlib.import_module(f"hytron.claims.{name}")
    if overrides:
        base = module.QUICK if quick else module.FULL
        known = {f.name for f in dataclasses.fields(base)}
        unknown = sorted({k.partition("=")[0].split(".")[0] for k in overrides} - known)
        if unknown:
            raise ValueError(f"claim {name}: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
        kwargs["settings"] = from_dict(type(base), apply_overrides(dataclasses.asdict(base), overrides),
                                       where=f"claim {name}")
    if seeds is None:
        seeds = DEFAULT_SEEDS["quick"] if quick else getattr(module, "SEEDS", DEFAULT_SEEDS["full"])
    if not hasattr(module, "run_seed"):
        return module.run(out, quick=quick, seeds=seeds, log=log, **kwargs)
    import time

    from hytron.pipelines.experiment import run_seeds, seeds_for

    started = time.perf_counter()
    settings = kwargs.pop("settings", None) or (module.QUICK if quick else module.FULL)
    records = run_seeds(module.__name__, Path(out), settings, seeds_for(seeds), jobs=jobs, threads=threads, log=log)
    return module.summarize(Path(out), settings, records, started, log=log)
