"""Small-scale reproductions of the stack's four headline claims, each one command: `hytron reproduce CLAIM`.

    from hytron.claims import run_claim
    result = run_claim("data", "runs/claims/data", quick=True)     # writes result.json + PNG plots

Claims: `data` (curated data converges faster), `hybrid` (hybrid decodes faster with less memory than pure
attention), `nvfp4` (4-bit training stays close to higher precision), `reasoning` (shorter reasoning at
equal accuracy). Each module has a FULL and a QUICK (CI) size and a `run(out, quick)` function.
"""

from __future__ import annotations

import importlib
from pathlib import Path

CLAIMS = ("data", "hybrid", "nvfp4", "reasoning")


def run_claim(name: str, out: str | Path, quick: bool = False, **kwargs) -> dict:
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; known: {', '.join(CLAIMS)}")
    return importlib.import_module(f"hytron.claims.{name}").run(out, quick=quick, **kwargs)
