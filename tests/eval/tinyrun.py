"""A real, very small end-to-end run for tests: TinyWeb -> curate -> tokenizer -> pack -> pre-train a few steps."""

from __future__ import annotations

from pathlib import Path


def build_tiny_run(root: Path, docs: int = 400, steps: int = 6, vocab: int = 512) -> dict[str, Path]:
    """Returns paths: tinyweb, curated, packed, run, model. Takes a few seconds on one CPU core."""
    from hytron.config import from_dict
    from hytron.data.curate_config import load_curate_config
    from hytron.data.mix import single_component_blend
    from hytron.data.pipeline import curate
    from hytron.data.tinyweb import generate
    from hytron.packing import iter_texts, pack
    from hytron.tokenizer import Tokenizer
    from hytron.train.pretrain import pretrain
    from hytron.train.recipe import TrainConfig

    root = Path(root)
    generate(root / "tinyweb", n_docs=docs, seed=0)
    cfg = load_curate_config(None, {"executor": {"workers": 1}})
    curate([root / "tinyweb"], root / "curated", cfg, progress=False)
    tok = Tokenizer.train(iter_texts([root / "curated"]), vocab_size=vocab)
    pack(single_component_blend([str(root / "curated")], validation_fraction=0.1), tok, root / "packed")
    train = from_dict(TrainConfig, {
        "name": "tiny-test", "out_dir": str(root / "run"), "steps": steps, "seed": 0, "log_every": 1,
        "eval_every": 3, "eval_batches": 2, "checkpoint_every": 0, "threads": 1,
        "model": {"preset": "hytron-tiny"}, "data": {"path": str(root / "packed"), "seq_len": 64, "batch_size": 4},
        "optim": {"lr": 3e-3, "warmup_steps": 2}})
    pretrain(train, progress=False)
    return {"tinyweb": root / "tinyweb", "curated": root / "curated", "packed": root / "packed",
            "run": root / "run", "model": root / "run" / "model"}
