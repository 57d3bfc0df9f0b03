"""`hytron quickstart`: the README's main job, the whole stack end to end on the embedded TinyWeb corpus."""

from __future__ import annotations

import argparse


def add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="TinyWeb → curate → tokenizer → pack → pre-train → eval → model dir",
                       description="Runs every stage on the embedded synthetic corpus (or --input your own files). "
                                   "Re-running with the same --out resumes where it stopped.")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    p.add_argument("--size", default="default", choices=["ci", "default"],
                   help="ci: ~1 minute smoke run; default: ~5M-param model, 10-15 minutes on 2 CPU cores")
    p.add_argument("--input", dest="inputs", action="append", default=[], metavar="PATH",
                   help="curate and train on your own files/folders instead of TinyWeb (repeatable)")
    p.add_argument("--docs", type=int, help="TinyWeb documents to generate")
    p.add_argument("--steps", type=int, help="pre-training steps")
    p.add_argument("--preset", help="model preset (see `hytron model-info`)")
    p.add_argument("--blend", default="blend-quickstart", help="blend recipe name or YAML file")
    p.add_argument("--workers", type=int, help="curation worker processes (default: one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from hytron.pipelines.quickstart import QuickstartConfig, run

    cfg = QuickstartConfig(out=args.out, size=args.size, inputs=args.inputs, docs=args.docs, steps=args.steps,
                           preset=args.preset, seed=args.seed, blend=args.blend, workers=args.workers)
    result = run(cfg)
    model_dir = result.get("model_dir")
    pre = result["pretrain"]
    print()
    print(f"done in {sum(v for v in result['seconds'].values()):.0f} s: {result['curation']['kept_docs']} of "
          f"{result['curation']['input_docs']} documents kept, {result['train_tokens']:,} training tokens, "
          f"{pre['step']} steps")
    if "val_loss" in pre:
        print(f"validation loss {pre['val_loss']:.3f} nats/token, {pre['val_bpb']:.3f} bits/byte")
    ev = result.get("eval", {})
    if "tasks.validation.bpb" in ev:
        print(f"held-out TinyWeb text: {ev['tasks.validation.bpb']:.3f} bits/byte")
    for task in ("world_qa", "arithmetic"):
        if f"tasks.{task}.acc" in ev:
            print(f"{task}: accuracy {ev[f'tasks.{task}.acc']:.3f} (chance {ev[f'tasks.{task}.chance']:.2f}, "
                  f"{ev[f'tasks.{task}.n']:.0f} items)")
    if model_dir:
        print(f"model (Nemotron-H format + tokenizer): {model_dir}")
        print(f"  chat in the terminal:   hytron chat {model_dir}")
        print(f"  serve an OpenAI API:    hytron serve {model_dir}   (http://127.0.0.1:8000/v1)")
        print(f"  evaluate:               hytron eval {model_dir}")
        print(f"  in transformers:        AutoModelForCausalLM.from_pretrained('{model_dir}')")
    print(f"report: {result['report']}   (model card: {model_dir}/README.md, data card: {model_dir}/DATA_CARD.md)")
    print(f"summary: {result['out']}/quickstart.json")
    return 0
