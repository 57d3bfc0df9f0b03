"""LoRA adapters on a model's Linears, applied from outside; PEFT-format save/load; merge into plain weights.

LoRA (Hu et al., arXiv 2106.09685) freezes W and learns a low-rank update: y = x Wᵀ + s · (x Aᵀ) Bᵀ with
A (r, in), B (out, r), s = alpha / r (or alpha / √r with rsLoRA, arXiv 2312.03732). B starts at zero, so a
fresh adapter leaves the model unchanged. `apply_lora` swaps the chosen `nn.Linear`s for `LoRALinear`s that
keep the same `weight` Parameter under the same name, so the model code never learns about adapters.

On disk an adapter is what the `peft` library writes: `adapter_config.json` + `adapter_model.safetensors`
with keys `base_model.model.<transformers module path>.lora_{A,B}.weight` (transformers names the backbone
`model.`, hytron `backbone.`). `peft` refuses LoRA on Mamba `out_proj` for Nemotron-H models (its fused CUDA
path bypasses the module), so the default targets leave it out; target it explicitly and merge instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hytron.config import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# attention q/k/v/o, Mamba in_proj, MLP up/down: every Linear peft accepts on a Nemotron-H model
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "in_proj", "up_proj", "down_proj")
ALL_TARGETS = (*DEFAULT_TARGETS, "out_proj", "lm_head")
PEFT_REFUSES = ("out_proj",)  # on model_type nemotron_h


@dataclass
class LoRAConfig:
    """Rank, scale and which Linears (by last name component) get an adapter."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    use_rslora: bool = False

    def __post_init__(self):
        if self.r < 1:
            raise ConfigError(f"lora.r: must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha: must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout: must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ConfigError("lora.targets: name at least one Linear, e.g. [q_proj, in_proj, up_proj]")
        unknown = sorted(set(self.targets) - set(ALL_TARGETS))
        if unknown:
            raise ConfigError(f"lora.targets: unknown module name(s) {unknown}; choose from {list(ALL_TARGETS)}")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


class LoRALinear(nn.Linear):
    """An nn.Linear (same `weight`, frozen) plus a trainable low-rank update scaled by `scaling`."""

    def __init__(self, base: nn.Linear, r: int, scaling: float, dropout: float = 0.0):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # shared, not copied: the optimizer and state_dict see the same tensor
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        # adapters are trained: fp32 masters under a bf16/fp16 base (as peft does), the base's dtype otherwise
        half = base.weight.dtype in (torch.bfloat16, torch.float16)
        kw = {"device": base.weight.device, "dtype": torch.float32 if half else base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **kw))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **kw))  # (out, r): zero, so Δ = 0 at start
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's default init, as in peft
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        base = F.linear(x, self.weight, self.bias)
        delta = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return base + self.scaling * delta

    def delta_weight(self) -> Tensor:
        """s · B A: the (out, in) update that merging adds to W."""
        return self.scaling * (self.lora_B.float() @ self.lora_A.float())

    def merged(self) -> nn.Linear:
        """A plain nn.Linear holding W + s·BA (what `merge_lora` puts back)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_((self.weight.float() + self.delta_weight()).to(self.weight.dtype))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def apply_lora(model: nn.Module, config: LoRAConfig) -> dict[str, LoRALinear]:
    """Freeze every parameter of `model` and wrap the targeted Linears (in place); returns name -> adapter.

    The default target list is a menu: names the model lacks (q_proj on an attention-free model) are skipped,
    and `lora_coverage` shows what matched. A list the user wrote is a contract: a name that matches no Linear
    is an error that says which layer kinds the model has, never a silent skip (peft's recurring complaint)."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("apply_lora: the model already has LoRA adapters; merge or load a fresh model first")
    linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    found = {name.rsplit(".", 1)[-1] for name in linears}
    missing = [t for t in config.targets if t not in found]
    if missing and (list(config.targets) != list(DEFAULT_TARGETS) or len(missing) == len(config.targets)):
        kinds = sorted({_layer_kind(model, n) for n in linears} - {"other"})
        raise ValueError(f"lora.targets: {missing} match no nn.Linear in this model (its layer kinds: "
                         f"{', '.join(kinds)}; Linear names: {sorted(found)})")
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped: dict[str, LoRALinear] = {}
    for name, module in linears.items():
        if name.rsplit(".", 1)[-1] in config.targets:
            wrapped[name] = LoRALinear(module, config.r, config.scaling, config.dropout)
            _set_module(model, name, wrapped[name])
    return wrapped


# Layer kinds of the coverage report, in the order it prints them.
LAYER_KINDS = ("mamba", "attention", "mlp", "moe routed experts", "moe shared experts", "moe latent", "mtp",
               "lm head")
_BLOCK_KINDS = {"M": "mamba", "*": "attention", "-": "mlp"}


def _layer_kind(model: nn.Module, name: str) -> str:
    """Which layer kind the parameter or module at `name` belongs to ("other": embeddings, final norm)."""
    parts = name.split(".")
    if parts[0] == "mtp":
        return "mtp"
    if parts[0] == "lm_head":
        return "lm head"
    if len(parts) < 3 or parts[1] != "layers":
        return "other"
    block = model.get_submodule(".".join(parts[:3]))
    kind = _BLOCK_KINDS.get(getattr(block, "kind", ""), "")
    if kind:
        return kind
    rest = parts[3:]
    if "shared_experts" in rest:
        return "moe shared experts"
    if any("latent" in p for p in rest):
        return "moe latent"
    if "experts" in rest:
        return "moe routed experts"
    return "moe routed experts" if "mixer" in rest else "other"  # the router belongs with the experts


def lora_coverage(model: nn.Module) -> list[dict]:
    """Per layer kind the model has: its Linears, how many carry an adapter, and how many parameters train.

    Routed experts are 3-D tensors, not Linears, so LoRA never reaches them; the report shows them with 0
    adapted modules so that nobody believes otherwise."""
    rows = {k: {"kind": k, "linears": 0, "adapted": 0, "trainable_params": 0, "params": 0} for k in LAYER_KINDS}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            row = rows.get(_layer_kind(model, name))
            if row is not None:
                row["linears"] += 1
                row["adapted"] += isinstance(module, LoRALinear)
    for name, p in model.named_parameters():
        row = rows.get(_layer_kind(model, name))
        if row is not None:
            row["params"] += p.numel()
            row["trainable_params"] += p.numel() if p.requires_grad else 0
    return [r for r in rows.values() if r["params"]]


def format_coverage(rows: list[dict]) -> str:
    """The coverage table as text, one line per layer kind plus a total."""
    lines = [f"{'layer kind':<20}{'adapted / Linears':>18}{'trainable params':>18}{'of params':>14}"]
    for r in rows:
        lines.append(f"{r['kind']:<20}{str(r['adapted']) + ' / ' + str(r['linears']):>18}"
                     f"{r['trainable_params']:>18,}{r['params']:>14,}")
    total, train = sum(r["params"] for r in rows), sum(r["trainable_params"] for r in rows)
    lines.append(f"{'total':<20}{'':>18}{train:>18,}{total:>14,}  ({100 * train / max(total, 1):.2f}% train)")
    return "\n".join(lines)


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight and put plain nn.Linears back (in place); returns the model."""
    adapters = lora_modules(model)
    if not adapters:
        raise ValueError("merge_lora: the model has no LoRA adapters")
    for name, module in adapters.items():
        _set_module(model, name, module.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


# ---- PEFT format ---------------------------------------------------------------------------------------
def _peft_key(hytron_name: str) -> str:
    """backbone.layers.3.mixer.q_proj -> base_model.model.model.layers.3.mixer.q_proj (transformers' path)."""
    if hytron_name.startswith("backbone."):
        hytron_name = "model." + hytron_name[len("backbone."):]
    return "base_model.model." + hytron_name


def _hytron_name(peft_module: str) -> str:
    name = peft_module.removeprefix("base_model.model.")
    for prefix in ("model.", "backbone."):
        if name.startswith(prefix):
            return "backbone." + name[len(prefix):]
    return name


def save_adapter(model: nn.Module, path: str | Path, config: LoRAConfig, base_model: str = "") -> Path:
    """Write the model's adapters as a PEFT LoRA adapter directory (safetensors, never pickle)."""
    from safetensors.torch import save_file

    adapters = lora_modules(model)
    if not adapters:
        raise ValueError("save_adapter: the model has no LoRA adapters (apply_lora first)")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, m in adapters.items():
        tensors[f"{_peft_key(name)}.lora_A.weight"] = m.lora_A.detach().contiguous().cpu()
        tensors[f"{_peft_key(name)}.lora_B.weight"] = m.lora_B.detach().contiguous().cpu()
    save_file(tensors, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    targets = sorted({n.rsplit(".", 1)[-1] for n in adapters})
    peft_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base_model),
        "r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout, "use_rslora": config.use_rslora,
        "target_modules": targets, "bias": "none", "fan_in_fan_out": False, "modules_to_save": None,
        "init_lora_weights": True, "inference_mode": True, "use_dora": False, "layers_to_transform": None,
        "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, "revision": None,
    }
    (path / ADAPTER_CONFIG).write_text(json.dumps(peft_config, indent=2) + "\n")
    return path


def read_adapter_config(path: str | Path) -> LoRAConfig:
    """The LoRAConfig of a PEFT adapter directory; refuses what hytron cannot reproduce exactly."""
    file = Path(path) / ADAPTER_CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {ADAPTER_CONFIG}; is this a PEFT adapter directory?")
    data = json.loads(file.read_text())
    if data.get("peft_type") != "LORA":
        raise ValueError(f"{file}: peft_type is {data.get('peft_type')!r}; hytron loads LORA adapters only")
    unsupported = {"use_dora": data.get("use_dora"), "fan_in_fan_out": data.get("fan_in_fan_out"),
                   "bias": data.get("bias") not in (None, "none"), "rank_pattern": data.get("rank_pattern"),
                   "alpha_pattern": data.get("alpha_pattern"), "modules_to_save": data.get("modules_to_save")}
    for key, used in unsupported.items():
        if used:
            raise ValueError(f"{file}: {key}={data[key]!r} is not supported by hytron's LoRA")
    targets = data.get("target_modules") or []
    if isinstance(targets, str):
        raise ValueError(f"{file}: target_modules is a regex ({targets!r}); hytron needs a list of names")
    return LoRAConfig(r=int(data["r"]), alpha=float(data["lora_alpha"]), dropout=float(data.get("lora_dropout", 0)),
                      targets=list(targets), use_rslora=bool(data.get("use_rslora", False)))


def load_adapter(model: nn.Module, path: str | Path) -> LoRAConfig:
    """Apply the PEFT adapter at `path` to `model` (in place, written by hytron or by peft); returns its config."""
    from safetensors.torch import load_file

    path = Path(path)
    config = read_adapter_config(path)
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{path}: no {ADAPTER_WEIGHTS} (hytron reads safetensors adapters only)")
    tensors = load_file(str(weights))
    per_module: dict[str, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        module, _, part = key.rpartition(".lora_")
        if part not in ("A.weight", "B.weight") and part not in ("A.default.weight", "B.default.weight"):
            raise ValueError(f"{weights}: unexpected tensor {key!r} (only lora_A / lora_B weights are supported)")
        per_module.setdefault(_hytron_name(module), {})[part[0]] = t
    adapters = apply_lora(model, LoRAConfig(r=config.r, alpha=config.alpha, dropout=0.0,
                                            targets=config.targets, use_rslora=config.use_rslora))
    missing, unexpected = sorted(set(adapters) - set(per_module)), sorted(set(per_module) - set(adapters))
    if missing or unexpected:
        raise ValueError(f"{path}: adapter does not match the model: no weights for {missing[:4]}, weights for "
                         f"unknown modules {unexpected[:4]}")
    with torch.no_grad():
        for name, m in adapters.items():
            a, b = per_module[name]["A"], per_module[name]["B"]
            if tuple(a.shape) != tuple(m.lora_A.shape) or tuple(b.shape) != tuple(m.lora_B.shape):
                raise ValueError(f"{path}: {name} has lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)}, the model "
                                 f"needs {tuple(m.lora_A.shape)} / {tuple(m.lora_B.shape)}")
            m.lora_A.copy_(a)
            m.lora_B.copy_(b)
    return config
