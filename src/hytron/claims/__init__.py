"""Small-scale reproductions of the stack's four headline claims, each one command: `hytron reproduce CLAIM`.

    from hytron.claims import run_claim
    result = run_claim("data", "runs/claims/data", quick=True, seeds=2)   # writes result.json + PNG plots

Claims: `data` (curated data converges faster), `hybrid` (hybrid decodes faster with less memory than pure
attention), `nvfp4` (4-bit training stays close to higher precision), `reasoning` (shorter reasoning at
equal accuracy). Each module has a FULL and a QUICK (CI) size and a `run(out, quick, seeds)` function; every
claim runs once per seed and `result.json` holds the per-seed values, their mean and 95% interval, and a
verdict read off the interval (`hytron.claims.stats`), with the settings, data hashes and overlap checks.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from hytron.config import from_dict

CLAIMS = ("data", "hybrid", "nvfp4", "reasoning")


DEFAULT_SEEDS = {"full": 3, "quick": 2}  # two seeds is the fewest that give an interval


def run_claim(name: str, out: str | Path, quick: bool = False, seeds: int | None = None,
              overrides: dict | None = None, **kwargs) -> dict:
    """Run claim `name` into `out`; `overrides` replace fields of its FULL (or QUICK) settings, validated."""
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; known: {', '.join(CLAIMS)}")
    module = importlib.import_module(f"hytron.claims.{name}")
    if overrides:
        base = module.QUICK if quick else module.FULL
        known = {f.name for f in dataclasses.fields(base)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"claim {name}: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
        kwargs["settings"] = from_dict(type(base), {**dataclasses.asdict(base), **overrides}, where=f"claim {name}")
    seeds = seeds if seeds is not None else DEFAULT_SEEDS["quick" if quick else "full"]
    return module.run(out, quick=quick, seeds=seeds, **kwargs)
