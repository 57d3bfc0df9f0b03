"""hytron: build your own hybrid Mamba-2/Transformer language model, Nemotron-style, at any scale."""

__version__ = "0.1.0"
