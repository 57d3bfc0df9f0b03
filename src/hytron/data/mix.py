"""Blend specs: which curated documents go into training, grouped into weighted components, with exclusions.

A blend is a YAML file (`recipes/blend*.yaml`):

    name: quickstart
    inputs: [runs/quickstart/curated/kept]   # curation output dirs, JSONL files or folders of JSONL
    components:                               # a document joins the FIRST component it matches
      - {name: high, weight: 0.7, buckets: [3, 4]}
      - {name: rest, weight: 0.3}             # no filter: every remaining document
    exclude:
      sources: [tinyweb/seo_spam]             # "drop this source and retrain" is this one line
    validation_fraction: 0.01                 # documents held out (by a hash of their id) for eval

`weight` is the share of *training sequences* drawn from a component (the packed loader samples components
by these weights, re-reading a small component more often than a large one); weights are normalised.
A component may select by `sources` (record field `source`), by quality `buckets` (record field
`quality_bucket`: 0..4, or null for documents curation did not score), and may read its own `inputs`.
A component that ends up empty after exclusions is dropped at packing time with a warning, so excluding a
source never requires a second edit. Relative paths are resolved against the current directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hytron.config import ConfigError, from_dict, load_mapping, to_dict

NUM_BUCKETS = 5  # Nemotron-CC's five quality buckets, 0 (lowest) .. 4 (highest)


def _check_buckets(buckets: list[int | None] | None, where: str) -> None:
    for i, b in enumerate(buckets or []):
        if b is not None and not 0 <= b < NUM_BUCKETS:
            raise ConfigError(f"{where}[{i}]: quality bucket must be 0..{NUM_BUCKETS - 1} or null, got {b!r}")


@dataclass
class Exclude:
    """Documents removed from every component."""

    sources: list[str] = field(default_factory=list)
    buckets: list[int | None] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_buckets(self.buckets, "exclude.buckets")

    def matches(self, source: str, bucket: int | None, doc_id: str | None) -> bool:
        return source in self.sources or (bucket in self.buckets) or (doc_id is not None and doc_id in self.ids)


@dataclass
class Component:
    """A weighted group of documents selected by source and/or quality bucket."""

    name: str
    weight: float
    sources: list[str] | None = None  # None: any source
    buckets: list[int | None] | None = None  # None: any bucket (including unscored documents)
    inputs: list[str] | None = None  # None: the blend's `inputs`

    def __post_init__(self) -> None:
        where = f"component {self.name!r}"
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"components.name: {self.name!r} must be non-empty letters, digits, '-', '_', '.'")
        if not self.weight > 0 or self.weight != self.weight or self.weight == float("inf"):
            raise ConfigError(f"{where}.weight: must be a positive finite number, got {self.weight!r}")
        if self.sources is not None and not self.sources:
            raise ConfigError(f"{where}.sources: empty list selects nothing; omit the field to select any source")
        if self.buckets is not None and not self.buckets:
            raise ConfigError(f"{where}.buckets: empty list selects nothing; omit the field to select any bucket")
        _check_buckets(self.buckets, f"{where}.buckets")
        if self.inputs is not None and not self.inputs:
            raise ConfigError(f"{where}.inputs: empty list; omit the field to use the blend's inputs")

    def matches(self, source: str, bucket: int | None) -> bool:
        return (self.sources is None or source in self.sources) and (self.buckets is None or bucket in self.buckets)


@dataclass
class Blend:
    """Weighted components over curated documents, exclusions and the validation hold-out."""

    components: list[Component]
    inputs: list[str] = field(default_factory=list)
    exclude: Exclude = field(default_factory=Exclude)
    name: str = "blend"
    validation_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.components:
            raise ConfigError("components: a blend needs at least one component")
        names = [c.name for c in self.components]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"components.name: duplicate component name(s) {dupes}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction: must be in [0, 1), got {self.validation_fraction!r}")
        for c in self.components:
            if c.inputs is None and not self.inputs:
                raise ConfigError(f"inputs: component {c.name!r} has no `inputs` and the blend has none either")

    @property
    def weights(self) -> dict[str, float]:
        """Component weights normalised to sum to 1."""
        total = sum(c.weight for c in self.components)
        return {c.name: c.weight / total for c in self.components}

    def input_paths(self) -> list[str]:
        """Every distinct input path, in first-mention order."""
        seen: dict[str, None] = {}
        for c in self.components:
            for p in c.inputs if c.inputs is not None else self.inputs:
                seen.setdefault(p, None)
        return list(seen)

    def route(self, source: str, bucket: int | None, doc_id: str | None = None,
              input_path: str | None = None) -> str | None:
        """The component a document belongs to (first match), or None when excluded or unmatched."""
        if self.exclude.matches(source, bucket, doc_id):
            return None
        for c in self.components:
            paths = c.inputs if c.inputs is not None else self.inputs
            if input_path is not None and input_path not in paths:
                continue
            if c.matches(source, bucket):
                return c.name
        return None

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Blend:
        return from_dict(cls, data)

    @classmethod
    def load(cls, path: str | Path) -> Blend:
        """Read and validate a blend YAML/JSON file; errors name the file and the field."""
        try:
            return from_dict(cls, load_mapping(path))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def with_inputs(self, inputs: list[str]) -> Blend:
        """The same blend reading `inputs` instead (components that name their own inputs keep them)."""
        return dataclasses.replace(self, inputs=list(inputs))


def single_component_blend(inputs: list[str], validation_fraction: float = 0.0, seed: int = 0) -> Blend:
    """The blend used when no spec is given: every document of `inputs` in one component named `all`."""
    return Blend(components=[Component(name="all", weight=1.0)], inputs=list(inputs), name="all",
                 validation_fraction=validation_fraction, seed=seed)
