"""Single-device hybrid Mamba-2/Transformer models of the Nemotron-H family, in plain PyTorch."""

from hytron.model.cache import HybridCache
from hytron.model.config import PRESETS, HybridConfig, presets_by_class
from hytron.model.hybrid import HybridLM

__all__ = ["HybridCache", "HybridConfig", "HybridLM", "PRESETS", "presets_by_class"]
