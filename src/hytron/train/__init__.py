"""Training: the pre-training loop and the library pieces it shares with SFT, RL and distillation."""
