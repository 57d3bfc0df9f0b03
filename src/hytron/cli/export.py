"""Export verbs: `hytron export gguf MODEL_DIR --out FILE.gguf` (llama.cpp, Ollama, LM Studio)."""

from __future__ import annotations

import argparse


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model directory in another runtime's format")
    kinds = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    g = kinds.add_parser("gguf", help="one GGUF file for llama.cpp / Ollama / LM Studio (model + tokenizer + "
                                      "chat template)")
    g.add_argument("model_dir", help="Nemotron-H model directory (config.json, safetensors, tokenizer.json)")
    g.add_argument("--out", required=True, help="the .gguf file to write")
    g.add_argument("--outtype", default="f32", choices=["f32", "f16", "bf16", "q8_0"],
                   help="weight type of the matrices (norms, SSM parameters and the router stay f32)")
    g.set_defaults(func=cmd_export_gguf)


def cmd_export_gguf(args: argparse.Namespace) -> int:
    from hytron.export.gguf_model import export_gguf, mtp_not_written
    from hytron.model.hf import load_config

    path = export_gguf(args.model_dir, args.out, args.outtype)
    if note := mtp_not_written(load_config(args.model_dir)):
        print(note)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.outtype})")
    print(f"chat with it: llama-cli -m {path} -cnv --jinja   (or python -m llama_cpp.server --model {path})")
    return 0
