"""Customize a trained model: LoRA adapters, knowledge distillation, Minitron-style pruning, fine-tuning loop."""

from hytron.tune.distill import distill_loss, teacher_topk, topk_kl
from hytron.tune.finetune import chat_batches, evaluate, finetune, packed_batches, packed_eval_batches
from hytron.tune.lora import LoRAConfig, apply_lora, load_adapter, merge_lora, save_adapter
from hytron.tune.recipe import TuneConfig

__all__ = ["LoRAConfig", "TuneConfig", "apply_lora", "chat_batches", "distill_loss", "evaluate", "finetune",
           "load_adapter", "merge_lora", "packed_batches", "packed_eval_batches", "save_adapter", "teacher_topk",
           "topk_kl"]
