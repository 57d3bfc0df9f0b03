"""A tiny trained tokenizer and a tiny random hybrid saved together: the fixtures of the infer and serve tests."""

from __future__ import annotations

from pathlib import Path

import torch

from hytron.model import HybridConfig, HybridLM
from hytron.tokenizer import Tokenizer

CORPUS = [
    "The river Alder rises on Mount Kell and flows north to the sea.\n",
    "Lesson 3: 17 + 25 = 42. First add the ones: 7 + 5 = 12, write 2, carry 1.\n",
    "Once upon a time, a fox named Ilse lived at the edge of the wood.\nShe liked apples.\n",
    "Question: what is 6 times 7?\nAnswer: 42\n",
    "Der Fluss entspringt am Berg. Le fleuve prend sa source à la montagne. 川は山から流れる。\n",
    "Emoji 😀🚀 and symbols ∑ ∫ ≤ ≥ — « » „ “\n",
]


def train_tokenizer() -> Tokenizer:
    return Tokenizer.train(CORPUS * 40, vocab_size=400, min_frequency=2)


def tiny_chat_model(tok: Tokenizer, seed: int = 0, **overrides) -> HybridLM:
    """hytron-tiny with the tokenizer's vocabulary and seeded random weights (eval mode)."""
    torch.manual_seed(seed)
    cfg = HybridConfig.from_name("hytron-tiny", vocab_size=tok.vocab_size, **overrides)
    return HybridLM(cfg).eval()


def save_chat_model(directory: Path, seed: int = 0) -> Path:
    tok = train_tokenizer()
    tiny_chat_model(tok, seed).save_pretrained(directory, tokenizer=tok)
    return Path(directory)
