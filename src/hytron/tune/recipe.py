"""Recipes of the customization verbs, typed and validated like every training recipe (`hytron.config.load_recipe`:
a file or a shipped name, then `--set` overrides).

`LoRARecipe`, `DistillRecipe` and `PruneRecipe` are tuning runs (`TuneConfig`, itself a `TrainConfig`: optimizer,
schedule, length, precision, device, distributed, checkpoints) with the few fields their job adds; the model to
start from is `model.init_from` and the data `data.path`, as in `hytron sft`. `CustomizeConfig` is the recipe of
the `hytron customize` pipeline; its `train` section is a `TuneConfig` and its `sft` section an SFT recipe:

    name: acme
    out: runs/customize-acme
    base_model: runs/quickstart/run/model     # any Nemotron-H model directory with its tokenizer
    method: pretrain                          # pretrain (continued pre-training, all weights) | lora
    data:
      inputs: [my-docs/]                      # your files: text, Markdown, HTML, JSONL, Parquet, WARC
      replay: [runs/quickstart/curated]       # general data mixed back in to limit forgetting
      replay_share: 0.3
    train: {steps: 200, optim: {lr: 5.0e-4}, data: {seq_len: 256, batch_size: 8}}
    lora: {r: 8, alpha: 16}
    sft: {data: {path: chat.jsonl}, steps: 100}   # optional: an SFT recipe (hytron.train.recipe.SFTConfig)
    mtp_refresh: true                         # keep a base model's MTP head (speculative drafts) fresh
    probes:                                   # facts from your documents, checked before and after
      - {prompt: "The Zorbex project codename is", answer: " Quillfeather", distractors: [" Ironbridge"]}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import torch

from hytron.config import ConfigError
from hytron.train.recipe import DataSpec, OptimSpec, SFTConfig, TrainConfig
from hytron.tune.lora import LoRAConfig

TUNE_PRECISIONS = ("auto", "fp32", "bf16")


def _tune_optim() -> OptimSpec:
    return OptimSpec(lr=1e-3, weight_decay=0.0, schedule="cosine", warmup_steps=10)


@dataclass
class TuneConfig(TrainConfig):
    """A tuning run is a training recipe (`TrainConfig`: optimizer and schedule, length, precision, device,
    distributed, checkpoints, evaluation cadence, `data.seq_len`/`batch_size`/`grad_accum`) whose model already
    exists (all weights, LoRA adapters, or a student beside a teacher), plus the distillation settings.

    Precision: "auto" is bf16 autocast on CUDA and fp32 on CPU; "bf16" is bf16 autocast on every device (on
    a CPU too, so the CPU tests walk the GPU's path); "fp32" is fp32. The low-precision pre-training recipes
    (fp8, nvfp4, ...) are not tuning precisions: their Linears would replace the adapters'."""

    steps: int = 100
    keep_checkpoints: int = 1
    eval_every: int = 0  # 0: only before and after
    eval_batches: int = 8
    optim: OptimSpec = field(default_factory=_tune_optim)
    data: DataSpec = field(default_factory=lambda: DataSpec(seq_len=128, batch_size=8))
    # distillation (used when a teacher is given)
    kd_topk: int = 64
    kd_temperature: float = 1.0
    kd_alpha: float = 1.0  # share of the KD loss; the rest is cross-entropy on the data

    def __post_init__(self):
        super().__post_init__()
        if self.precision not in TUNE_PRECISIONS:
            raise ConfigError(f"precision: tuning runs in {', '.join(TUNE_PRECISIONS)}, got {self.precision!r} "
                              "(low-precision recipes are for pre-training)")
        if self.kd_topk < 1:
            raise ConfigError(f"kd_topk: must be >= 1, got {self.kd_topk}")
        if self.kd_temperature <= 0:
            raise ConfigError(f"kd_temperature: must be positive, got {self.kd_temperature}")
        if not 0 <= self.kd_alpha <= 1:
            raise ConfigError(f"kd_alpha: must be in [0, 1], got {self.kd_alpha}")

    def autocast(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on `device` (None: no autocast)."""
        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.bfloat16
        return None

    def weights_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype frozen weights (a LoRA base, a teacher) are loaded in: bf16 whenever the run computes in
        bf16, so a bf16 published checkpoint is never copied to fp32 (trained weights stay fp32 masters)."""
        return torch.bfloat16 if self.autocast(device) is not None else torch.float32


R = TypeVar("R", bound=TuneConfig)


def _require(value, name: str, what: str) -> None:
    if not value:
        raise ConfigError(f"{name}: set it to {what}")


@dataclass
class LoRARecipe(TuneConfig):
    """`hytron lora RECIPE`: LoRA adapters on `model.init_from`, trained on `data.path` (a packed-data directory
    or chat JSONL rows). Writes OUT_DIR/adapter (PEFT), OUT_DIR/model with `merge`, OUT_DIR/run (checkpoints:
    re-running resumes) and OUT_DIR/summary.json (before/after loss, LoRA coverage per layer kind)."""

    name: str = "lora"
    out_dir: str = "runs/lora"
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    merge: bool = False  # also write the merged plain model to OUT_DIR/model

    def __post_init__(self):
        super().__post_init__()
        _require(self.model.init_from, "model.init_from", "the Nemotron-H model directory to adapt")
        _require(self.data.path, "data.path", "a packed-data directory (hytron tokenize) or a chat .jsonl file")


@dataclass
class DistillRecipe(TuneConfig):
    """`hytron distill RECIPE`: the student `model.init_from` trained on `teacher`'s top-k logits over `data.path`
    (`kd_topk`, `kd_temperature`, `kd_alpha`). Writes OUT_DIR/model, OUT_DIR/run and OUT_DIR/summary.json."""

    name: str = "distill"
    out_dir: str = "runs/distill"
    teacher: str = ""  # the teacher's Nemotron-H model directory (same tokenizer as the student)

    def __post_init__(self):
        super().__post_init__()
        _require(self.teacher, "teacher", "the teacher's Nemotron-H model directory")
        _require(self.model.init_from, "model.init_from", "the student's model directory (e.g. a pruned one)")
        _require(self.data.path, "data.path", "a packed-data directory (hytron tokenize) or a chat .jsonl file")


@dataclass
class PruneRecipe(TuneConfig):
    """`hytron prune RECIPE`: Minitron-style pruning of `model.init_from` to `target_params` (importance from
    `calib_batches` batches of `data.path`, the best of `candidates` depth/width plans by calibration loss),
    then, with `recover`, `steps` of distillation from the original model. Writes OUT_DIR/model and
    OUT_DIR/prune.json (and OUT_DIR/run while recovering)."""

    name: str = "prune"
    out_dir: str = "runs/prune"
    target_params: float = 0  # total parameters wanted, e.g. 3.8e6
    calib_batches: int = 8
    candidates: int = 16  # plans evaluated by calibration loss
    recover: bool = True  # distil the pruned model from the original for `steps` steps

    def __post_init__(self):
        super().__post_init__()
        _require(self.model.init_from, "model.init_from", "the Nemotron-H model directory to prune")
        _require(self.data.path, "data.path", "a packed-data directory (hytron tokenize): the calibration text")
        if self.target_params < 1:
            raise ConfigError(f"target_params: set the total parameters wanted (e.g. 3.8e6), got {self.target_params}")
        for f in ("calib_batches", "candidates"):
            if getattr(self, f) < 1:
                raise ConfigError(f"{f}: must be >= 1, got {getattr(self, f)}")


def as_recipe(cls: type[R], run: TuneConfig, **changes) -> R:
    """`run`'s training fields (optimizer, schedule, length, precision, device, ...) as a `cls` recipe, with
    `changes` (the job's own fields, or the name and folder a pipeline gives the stage)."""
    return cls(**{**{f.name: getattr(run, f.name) for f in fields(run) if f.init}, **changes})


def _customize_train() -> TuneConfig:
    return TuneConfig(steps=200, optim=OptimSpec(lr=5e-4, weight_decay=0.0, schedule="cosine", warmup_steps=10),
                      data=DataSpec(seq_len=256, batch_size=8))

METHODS = ("pretrain", "lora")


@dataclass
class CustomizeData:
    inputs: list[str] = field(default_factory=list)  # the user's documents (curated first)
    replay: list[str] = field(default_factory=list)  # general curated data / JSONL (used as is)
    replay_share: float = 0.3  # share of training sequences drawn from `replay`
    validation_fraction: float = 0.1  # documents held out (by id hash) per component for before/after loss
    curate_config: str | None = None  # curation YAML for your documents (default: the `documents` profile)

    def __post_init__(self):
        if not self.inputs:
            raise ConfigError("data.inputs: list your documents (files or folders)")
        if not 0 <= self.replay_share < 1:
            raise ConfigError(f"data.replay_share: must be in [0, 1), got {self.replay_share}")
        if self.replay_share > 0 and not self.replay:
            raise ConfigError("data.replay: set general data to replay, or set data.replay_share: 0")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"data.validation_fraction: must be in (0, 1), got {self.validation_fraction}")


@dataclass
class CustomizeConfig:
    base_model: str  # required: a Nemotron-H model directory (with its tokenizer)
    data: CustomizeData  # required: your documents, and the replay data
    name: str = "customize"
    out: str = "runs/customize"
    method: str = "pretrain"
    seed: int = 0
    threads: int = 0
    train: TuneConfig = field(default_factory=_customize_train)  # the run's shape; name, out_dir, seed, threads,
    # model.init_from and data.path are set for you
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    sft: SFTConfig | None = None  # an SFT recipe (data.path, steps, optim, ...); name, out_dir, seed, threads and
    # model.init_from are set for you (the run goes to OUT/sft and starts from the customized model)
    probes: list[dict[str, Any]] = field(default_factory=list)  # {prompt, answer, distractors: [...]}
    eval_harness: bool = False  # also run hytron.eval's standard suite before and after (when installed)
    mtp_refresh: bool = True  # a base model's MTP head trains (pretrain, sft) or is distilled (lora) along with it

    def __post_init__(self):
        if not self.base_model:
            raise ConfigError("base_model: set it to a Nemotron-H model directory (with its tokenizer)")
        if self.method not in METHODS:
            raise ConfigError(f"method: must be one of {list(METHODS)}, got {self.method!r}")
        for i, p in enumerate(self.probes):
            if not isinstance(p, dict) or not isinstance(p.get("prompt"), str) or not isinstance(p.get("answer"), str):
                raise ConfigError(f"probes[{i}]: needs string 'prompt' and 'answer', got {p!r}")
            if not isinstance(p.get("distractors", []), list):
                raise ConfigError(f"probes[{i}].distractors: must be a list of wrong answers")
        if self.sft is not None and not self.sft.data.path:
            raise ConfigError("sft.data.path: set it to a chat JSONL file (hytron reasoning-data --out FILE)")
