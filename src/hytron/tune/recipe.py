"""The `hytron customize` recipe: typed, validated settings for curate → train → (SFT) → eval → cards.

    name: acme
    out: runs/customize-acme
    base_model: runs/quickstart/run/model     # any Nemotron-H model directory with its tokenizer
    method: pretrain                          # pretrain (continued pre-training, all weights) | lora
    data:
      inputs: [my-docs/]                      # your files: text, Markdown, HTML, JSONL, Parquet, WARC
      replay: [runs/quickstart/curated]       # general data mixed back in to limit forgetting
      replay_share: 0.3
    train: {steps: 200, lr: 5.0e-4, seq_len: 256, batch_size: 8}
    lora: {r: 8, alpha: 16}
    sft: {data: chat.jsonl, steps: 100}       # optional: SFT recipe fields (hytron.train.sft)
    mtp_refresh: true                         # keep a base model's MTP head (speculative drafts) fresh
    probes:                                   # facts from your documents, checked before and after
      - {prompt: "The Zorbex project codename is", answer: " Quillfeather", distractors: [" Ironbridge"]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hytron.config import ConfigError
from hytron.train.recipe import SFTConfig
from hytron.tune.lora import LoRAConfig

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
class CustomizeTrain:
    steps: int = 200
    lr: float = 5e-4
    warmup_steps: int = 10
    seq_len: int = 256
    batch_size: int = 8
    eval_batches: int = 8

    def __post_init__(self):
        for f in ("steps", "seq_len", "batch_size", "eval_batches"):
            if getattr(self, f) < 1:
                raise ConfigError(f"train.{f}: must be >= 1, got {getattr(self, f)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: must be positive, got {self.lr}")


@dataclass
class CustomizeConfig:
    base_model: str  # required: a Nemotron-H model directory (with its tokenizer)
    data: CustomizeData  # required: your documents, and the replay data
    name: str = "customize"
    out: str = "runs/customize"
    method: str = "pretrain"
    seed: int = 0
    threads: int = 0
    train: CustomizeTrain = field(default_factory=CustomizeTrain)
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
