"""Pipelines: the runs that compose the stages below them (curation, tokenization, training, tuning, evaluation,
cards) into one resumable job.

- `quickstart`: TinyWeb (or your files) → curate → tokenizer → pack → pre-train → eval → model directory.
- `customize`: your documents + replay → continued pre-training or LoRA → (SFT) → eval → cards.
- `jobs`: the one-stage jobs of `hytron lora`, `merge`, `distill` and `prune` (load → tune → write).
- `experiment`: the shared runner of the claim reproductions (`hytron.claims`): a tracked `hytron pretrain` run
  with an evaluation hook, and seeds run in parallel processes.
"""
