"""Training recipes: typed, validated configs loaded from named YAML files under recipes/."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hytron.config import ConfigError, from_dict, load_mapping, to_dict

RECIPES_DIR = Path(__file__).resolve().parents[3] / "recipes"


@dataclass
class ModelSpec:
    preset: str = "hytron-small"  # a HybridConfig preset ...
    init_from: str | None = None  # ... or a Nemotron-H model directory to continue pre-training from
    overrides: dict[str, Any] = field(default_factory=dict)  # HybridConfig fields changed from the preset


@dataclass
class DataSpec:
    path: str = ""  # a packed-data directory (`hytron tokenize`)
    seq_len: int = 256
    batch_size: int = 8  # sequences per micro-batch per rank
    grad_accum: int = 1  # micro-batches per optimizer step
    weights: dict[str, float] | None = None  # override the blend's component weights

    def __post_init__(self):
        for f in ("seq_len", "batch_size", "grad_accum"):
            if getattr(self, f) < 1:
                raise ConfigError(f"data.{f}: must be >= 1, got {getattr(self, f)}")


@dataclass
class OptimSpec:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    schedule: str = "wsd"  # wsd | cosine | constant
    warmup_steps: int = 20
    decay_fraction: float = 0.2  # wsd: share of steps in the final decay

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError(f"optim.lr: must be positive, got {self.lr}")
        if self.schedule not in ("wsd", "cosine", "constant"):
            raise ConfigError(f"optim.schedule: must be wsd, cosine or constant, got {self.schedule!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.grad_clip < 0:
            raise ConfigError("optim.warmup_steps and optim.grad_clip must be >= 0")


@dataclass
class TrainConfig:
    name: str = "run"
    out_dir: str = "runs/run"
    steps: int = 200
    seed: int = 0
    precision: str = "auto"  # auto (fp32 on CPU, bf16 autocast on CUDA) | fp32 | bf16 | a hytron.lowp recipe
    distributed: str = "none"  # none | ddp | fsdp (under torchrun)
    device: str = "auto"
    log_every: int = 10
    eval_every: int = 50  # 0: only at the end
    eval_batches: int = 16
    checkpoint_every: int = 50  # 0: only at the end
    keep_checkpoints: int = 2
    threads: int = 0  # torch intra-op threads on CPU; 0 leaves torch's default
    compile: bool = False  # torch.compile each block (regional compilation); worth it on GPUs
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps: must be >= 1, got {self.steps}")
        if self.distributed not in ("none", "ddp", "fsdp"):
            raise ConfigError(f"distributed: must be none, ddp or fsdp, got {self.distributed!r}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints: must be >= 1, got {self.keep_checkpoints}")
        for f in ("log_every", "eval_every", "checkpoint_every", "eval_batches"):
            if getattr(self, f) < 0:
                raise ConfigError(f"{f}: must be >= 0, got {getattr(self, f)}")

    def to_dict(self) -> dict:
        return to_dict(self)


def recipe_path(name_or_path: str) -> Path:
    """A recipe file: a path as given, or `recipes/NAME.yaml`."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    named = RECIPES_DIR / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = sorted(f.stem for f in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []
    raise FileNotFoundError(f"no recipe {name_or_path!r}: not a file, and not one of recipes/ {known}")


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        data = data.setdefault(k, {})
    data[keys[-1]] = value


def load_recipe(name_or_path: str, overrides: list[str] | None = None, section: str | None = None,
                cls: type = TrainConfig):
    """Load a recipe (or one `section` of it) as `cls`, with `key.sub=value` overrides (values parsed as YAML)."""
    import yaml

    data = load_mapping(recipe_path(name_or_path))
    if section is not None:
        if section not in data:
            raise ConfigError(f"recipe {name_or_path}: has no {section!r} section (sections: {sorted(data)})")
        data = data[section]
    data = _merge({}, data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
        key, value = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(value))
    return from_dict(cls, data, where=f"recipe {name_or_path}")
