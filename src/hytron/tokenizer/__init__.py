"""Tokenizers: any Hugging Face tokenizer directory or hytron's own BPE, chat templates, reasoning and tool parsing."""

from hytron.tokenizer.core import BOS, EOS, IM_END, IM_START, PAD, SPECIAL_TOKENS, THINK_END, THINK_START, Tokenizer
from hytron.tokenizer.sandbox import TemplateBudget, TemplateBudgetError
from hytron.tokenizer.template import CHAT_TEMPLATE, ChatTemplate

__all__ = ["BOS", "CHAT_TEMPLATE", "EOS", "IM_END", "IM_START", "PAD", "SPECIAL_TOKENS", "THINK_END", "THINK_START",
           "ChatTemplate", "TemplateBudget", "TemplateBudgetError", "Tokenizer"]
