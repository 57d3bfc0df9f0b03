"""Training recipes: typed, validated configs, loaded with `hytron.config.load_recipe` (a file or a shipped name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hytron.config import ConfigError, to_dict


@dataclass
class MTPSpec:
    """Multi-token prediction as Megatron trains it: D depths share the model's MTP module (Nemotron 3.5
    recipes: `mtp_use_repeated_layer`, loss scale 0.3); depth k predicts token t+1+k."""

    depths: int = 0  # prediction depths trained; 0: no MTP loss
    loss_scale: float = 0.3  # total loss = LM loss + loss_scale x mean over depths of the MTP losses
    pattern: str = ""  # blocks of the MTP module added to a model that has none; "": "*E" with MoE, else "*-"
    # a model that already has an MTP head (model.init_from) keeps it fresh: full-weight stages (pretrain, sft)
    # train it with the MTP loss at `depths` (0: 2 depths), LoRA distils it from the adapted model afterwards
    # (`refresh_steps`, 0: a quarter of the run's steps, at least 20). false: the head is left as it was
    refresh: bool = True
    refresh_steps: int = 0

    def __post_init__(self):
        if not 0 <= self.depths <= 16:
            raise ConfigError(f"model.mtp.depths: must be in 0..16, got {self.depths}")
        if self.refresh_steps < 0:
            raise ConfigError(f"model.mtp.refresh_steps: must be >= 0, got {self.refresh_steps}")
        if not 0 <= self.loss_scale <= 100:
            raise ConfigError(f"model.mtp.loss_scale: must be in [0, 100], got {self.loss_scale}")


@dataclass
class ModelSpec:
    preset: str = "hytron-small"  # a HybridConfig preset ...
    init_from: str | None = None  # ... or a Nemotron-H model directory to continue pre-training from
    overrides: dict[str, Any] = field(default_factory=dict)  # HybridConfig fields changed from the preset
    mtp: MTPSpec = field(default_factory=MTPSpec)  # e.g. --set model.mtp='{depths: 2}'


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
class RunConfig:
    """What every training run has (pre-training, SFT, RL): a name and folder, a length, a model, an optimizer,
    and the cadence of logs and checkpoints."""

    name: str = "run"
    out_dir: str = "runs/run"
    steps: int = 200
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 50  # 0: only at the end
    keep_checkpoints: int = 2
    threads: int = 0  # torch intra-op threads on CPU; 0 leaves torch's default
    model: ModelSpec = field(default_factory=ModelSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps: must be >= 1, got {self.steps}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints: must be >= 1, got {self.keep_checkpoints}")
        for f in ("log_every", "checkpoint_every"):
            if getattr(self, f) < 0:
                raise ConfigError(f"{f}: must be >= 0, got {getattr(self, f)}")

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass
class TrainConfig(RunConfig):
    """A pre-training recipe: a run (`RunConfig`) on packed data, with precision, parallelism and evaluation."""

    precision: str = "auto"  # auto (fp32 on CPU, bf16 autocast on CUDA) | fp32 | bf16 | a hytron.lowp recipe[+switch]
    distributed: str = "none"  # none | ddp | fsdp (under torchrun)
    compile: bool = False  # torch.compile each block (regional compilation); worth it on GPUs
    eval_every: int = 50  # 0: only at the end
    eval_batches: int = 16
    data: DataSpec = field(default_factory=DataSpec)

    def __post_init__(self):
        super().__post_init__()
        if self.distributed not in ("none", "ddp", "fsdp"):
            raise ConfigError(f"distributed: must be none, ddp or fsdp, got {self.distributed!r}")
        for f in ("eval_every", "eval_batches"):
            if getattr(self, f) < 0:
                raise ConfigError(f"{f}: must be >= 0, got {getattr(self, f)}")


@dataclass
class SFTDataSpec:
    path: str = ""  # chat JSONL (hytron reasoning-data, or your own rows)
    seq_len: int = 512  # rows longer than this are dropped (and counted)
    batch_size: int = 16  # rows per micro-batch per rank
    grad_accum: int = 1
    val_rows: int = 64  # rows held out (seeded) for the masked validation loss

    def __post_init__(self):
        for f in ("seq_len", "batch_size", "grad_accum"):
            if getattr(self, f) < 1:
                raise ConfigError(f"data.{f}: must be >= 1, got {getattr(self, f)}")
        if self.val_rows < 0:
            raise ConfigError(f"data.val_rows: must be >= 0, got {self.val_rows}")


@dataclass
class SFTConfig(TrainConfig):
    """A training recipe (`TrainConfig`) whose data is chat JSONL; `tokenizer` defaults to the init model's."""

    tokenizer: str = ""
    data: SFTDataSpec = field(default_factory=SFTDataSpec)
