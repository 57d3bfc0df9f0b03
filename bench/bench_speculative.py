"""Benchmark: batch-1 greedy decode on CPU with and without speculative decoding by the model's own MTP head.

The model: a hytron directory with an MTP head (`--model DIR`, e.g. trained by `hytron pretrain --set
model.mtp='{"depths": 2}'`), or, by default, a small hybrid (preset, default hytron-small: Mamba-2, attention and
MLP blocks) with a "*-" MTP head trained here for `--steps` steps by hytron's objective (next-token loss + 0.3 x
the mean of the per-depth MTP losses, `hytron.train.loop.next_token_losses`) on synthetic text: documents made
of phrases drawn from a fixed set of random token phrases, so both the model and the head can learn to continue
a phrase (a stand-in for the repetitive structure of code or tool calls where MTP drafts pay off).

Measured through `hytron.infer.Engine` (what `hytron serve` runs): plain decoding and `speculative_tokens` K for
each `--k`, interleaved: each of `--repeats` rounds runs every arm once, back to back; tokens/s is an arm's best
round, and the ratio is also given as the median over rounds of the same-round ratio, which load changing between
rounds on a shared machine biases least (the best K is picked by it); every run checks its greedy tokens equal
plain decoding's. Printed: tokens/s, acceptance rate and mean accepted length (tokens per verify step) per K, where
batch-1 time goes (MTP drafting, main-model forwards by tokens per call, the rest) for plain decoding and the best
K, and the batch-`--batch` engine figure for the best K; ratios printed last. The machine's load average
(`os.getloadavg()`) is printed before and after measuring: on a shared CPU other work slows every arm.

    python bench/bench_speculative.py [--preset hytron-small] [--steps 300] [--k 1 2 3 4] [--new-tokens 128]
    python bench/bench_speculative.py --model runs/mtp/model
    python bench/bench_speculative.py --steps 120 --save runs/bench-mtp   # keep the trained model for --model
    python bench/bench_speculative.py --model runs/bench-mtp --threads 1 --llama --serve 16

The plain arm decodes with `--plain-mode` (default compile, `hytron serve`'s default: the torch.compile'd batch-1
step), the speculative arms with the same mode (static verify and draft steps, compiled at batch 1). Besides wall
time, each round's CPU time of this process is kept, and its same-round ratio printed: time spent waiting for a core
that other work holds is left out of it. `--llama` adds llama.cpp (llama-cpp-python, the f32 GGUF of the main model:
the export leaves the MTP head out) as a batch-1 arm of the same rounds; `--serve N` times N concurrent requests
(the prompt's token ids over HTTP) through two `hytron serve` processes, plain and `--speculative-tokens` K (the best
batch-1 K), rounds alternating between them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from bench_serve_peer import wait_http
from hytron.infer import Engine, SamplingParams
from hytron.model import HybridConfig, HybridLM
from hytron.train.loop import next_token_losses


def synthetic_batch(phrases: torch.Tensor, batch: int, seq_len: int, g: torch.Generator) -> torch.Tensor:
    """(batch, seq_len + 1) token ids: each row concatenates phrases picked at random from `phrases` (n, P)."""
    n, p = phrases.shape
    picks = torch.randint(0, n, (batch, (seq_len + 1) // p + 1), generator=g)
    return phrases[picks].flatten(1)[:, :seq_len + 1]


def train(model: HybridLM, phrases: torch.Tensor, steps: int, depths: int, seq_len: int, batch: int) -> None:
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=3e-3, betas=(0.9, 0.95))
    model.train()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        for group in opt.param_groups:  # linear warmup over 10% of the steps, then constant
            group["lr"] = 3e-3 * min(1.0, step / max(1, steps // 10))
        xy = synthetic_batch(phrases, batch, seq_len, g)
        loss, parts = next_token_losses(model(xy[:, :-1], mtp_depths=depths), xy[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == 1 or step % 50 == 0 or step == steps:
            shown = "  ".join(f"{k} {v.item():.3f}" for k, v in parts.items())
            print(f"  train step {step:4d}/{steps}  {shown}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    model.eval()


def time_split(model: HybridLM, prompt: list[int], k: int, new_tokens: int, mode: str) -> dict[str, float]:
    """Batch-1 decode of `prompt` with `speculative_tokens` k (0: plain), milliseconds spent in the MTP head's
    drafting, in the main model's forwards (by tokens per call: the prefill, 1 for plain steps, k+1 for
    verification) and in the rest (sampling/acceptance, caches, Python); second of two runs (the first warms up)."""
    import hytron.infer.speculative as spec
    from hytron.model.kernels import StaticDecoder

    spent: dict[str, float] = {}
    patched = {(spec.MTPDrafter, "draft"): "draft", (spec.StaticSpeculation, "greedy"): "draft+verify",
               (spec.StaticSpeculation, "verify"): "verify", (StaticDecoder, "step"): "plain step",
               (HybridLM, "forward"): "forward"}
    saved = {key: getattr(*key) for key in patched}

    def timed(name, fn):
        def wrapper(self, *a, **kw):
            t0 = time.perf_counter()
            out = fn(self, *a, **kw)
            key = name if name in ("draft", "plain step") else f"{name} x{a[0].size(1)}"
            spent[key] = spent.get(key, 0.0) + (time.perf_counter() - t0) * 1e3
            spent[key + " calls"] = spent.get(key + " calls", 0) + 1
            return out
        return wrapper

    engine = Engine(model, max_slots=1, speculative_tokens=k, decode_mode=mode)
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    for (cls, attr), name in patched.items():
        setattr(cls, attr, timed(name, saved[cls, attr]))
    try:
        for _ in range(2):
            spent.clear()
            t0 = time.perf_counter()
            engine.submit(prompt, params)
            engine.run_until_idle()
            total = (time.perf_counter() - t0) * 1e3
    finally:
        for (cls, attr), fn in saved.items():
            setattr(cls, attr, fn)
    ms = sum(v for key, v in spent.items() if not key.endswith(" calls"))
    return {**spent, "rest": total - ms, "total": total}


def with_tokenizer(model: HybridLM, directory: Path) -> Path:
    """Save `model` with a byte-level BPE tokenizer of exactly its vocabulary (trained on random words), which
    `hytron serve` and the GGUF export need; the benchmark sends token ids, so the text never matters."""
    import random

    from hytron.tokenizer import Tokenizer

    r = random.Random(0)
    words = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9))) for _ in range(6000)]
    tok = Tokenizer.train([" ".join(r.choice(words) for _ in range(200)) for _ in range(400)],
                          vocab_size=model.config.vocab_size)
    if tok.vocab_size != model.config.vocab_size:
        raise SystemExit(f"trained a tokenizer of {tok.vocab_size} ids for a vocabulary of {model.config.vocab_size}")
    model.save_pretrained(directory, tokenizer=tok)
    return directory


def make_llama_arm(model: HybridLM, prompt: list[int], new_tokens: int, threads: int):
    """A callable decoding `prompt` greedily for `new_tokens` with llama.cpp (f32 GGUF from `hytron export gguf`,
    which leaves the MTP head out) in a plain eval/argmax loop, prefill included as in the engine arms; returns the
    token ids."""
    import tempfile

    import llama_cpp
    import numpy as np

    from hytron.export.gguf_model import export_gguf

    work = Path(tempfile.mkdtemp(prefix="bench-spec-llama-"))
    gguf = export_gguf(with_tokenizer(model, work / "model"), work / "model-f32.gguf", "f32")
    # logits_all: llama-cpp-python 0.3.36 fills `scores` only then (see bench_decode_static.py)
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=len(prompt) + new_tokens + 16, n_threads=threads,
                          n_threads_batch=threads, logits_all=True, verbose=False)

    def decode() -> list[int]:
        llm.reset()
        llm.eval(prompt)
        out = [int(np.argmax(llm.scores[llm.n_tokens - 1]))]
        for _ in range(new_tokens - 1):
            llm.eval(out[-1:])
            out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        return out

    return decode


def measure_serve(model: HybridLM, prompt: list[int], args, k: int) -> dict:
    """N concurrent requests (the prompt's ids, greedy, --new-tokens each) through two `hytron serve` processes of
    the same model and --threads, one plain (decode mode as --plain-mode) and one with --speculative-tokens k;
    rounds alternate between them. Returns tokens/s per round of each and the median same-round ratio."""
    import asyncio
    import subprocess
    import sys
    import tempfile

    import httpx

    n = args.serve
    work = Path(tempfile.mkdtemp(prefix="bench-spec-serve-"))
    directory = with_tokenizer(model, work / "model")
    servers = {}
    try:
        for name, extra in (("plain", []), (f"K={k}", ["--speculative-tokens", str(k)])):
            port = 9000 + (os.getpid() + len(servers)) % 900
            cmd = [sys.executable, "-m", "hytron", "serve", str(directory), "--port", str(port), "--threads",
                   str(args.threads), "--max-slots", str(n), "--decode-mode", args.plain_mode, *extra]
            servers[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT),
                             f"http://127.0.0.1:{port}")
        for proc, url in servers.values():
            wait_http(url, proc, timeout=600)  # hytron serve compiles its steps before it listens

        def one_round(url: str, count: int, tokens: int) -> float:
            async def go():
                async with httpx.AsyncClient(base_url=url, timeout=1200) as c:
                    t0 = time.perf_counter()
                    rs = await asyncio.gather(*(c.post("/v1/completions", json={
                        "model": "model", "prompt": prompt, "max_tokens": tokens, "temperature": 0,
                        "ignore_eos": True}) for _ in range(count)))
                    elapsed = time.perf_counter() - t0
                for r in rs:
                    assert r.status_code == 200, r.text[:300]
                    assert r.json()["usage"]["completion_tokens"] == tokens, r.json()["usage"]
                return elapsed, [r.json()["choices"][0]["text"] for r in rs]
            return asyncio.run(go())

        for _, url in servers.values():  # warm-up
            one_round(url, 2, 8)
        rounds = {name: [] for name in servers}
        texts = {}
        for r in range(args.repeats):
            load = os.getloadavg()[0]
            for name, (_, url) in servers.items():
                t, texts[name] = one_round(url, n, args.new_tokens)
                rounds[name].append(n * args.new_tokens / t)
            print(f"serve round {r + 1}: " + "   ".join(f"{name} {v[-1]:7.1f} tok/s" for name, v in rounds.items())
                  + f"   (load {load:.2f} -> {os.getloadavg()[0]:.2f})", flush=True)
        names = list(servers)
        out = {"n": n, "k": k, "tok_s": rounds, "same_text": texts[names[0]] == texts[names[1]],
               "paired_ratio": statistics.median(b / a for a, b in zip(rounds[names[0]], rounds[names[1]]))}
        print(f"hytron serve, {n} concurrent requests: plain best {max(rounds[names[0]]):.1f} tok/s, speculative "
              f"K={k} best {max(rounds[names[1]]):.1f} tok/s; same text: {out['same_text']}")
        return out
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a hytron model directory with an MTP head (default: train one here)")
    ap.add_argument("--preset", default="hytron-small")
    ap.add_argument("--steps", type=int, default=300, help="training steps for the built-in model")
    ap.add_argument("--depths", type=int, default=2, help="MTP depths trained (the one block reused)")
    ap.add_argument("--phrases", type=int, default=64, help="distinct phrases in the synthetic text")
    ap.add_argument("--phrase-len", type=int, default=12)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4], help="speculative tokens to measure")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16, help="concurrent requests for the batched figure (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plain-mode", default="compile", choices=["compile", "static", "eager"],
                    help="the plain arm's decode_mode (default compile: hytron serve's default, the fair baseline)")
    ap.add_argument("--llama", action="store_true",
                    help="also time llama.cpp (llama-cpp-python, f32 GGUF of the main model) at batch 1, interleaved")
    ap.add_argument("--serve", type=int, default=0, metavar="N",
                    help="also time N concurrent requests through `hytron serve` with and without speculation")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--save", help="save the model trained here to this directory (reuse it with --model)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    g = torch.Generator().manual_seed(0)
    if args.model:
        model = HybridLM.from_pretrained(args.model).eval()
        if model.mtp is None:
            raise SystemExit(f"{args.model}: the model has no MTP head")
        saved = Path(args.model) / "bench_prompt.json"  # the prompt of the run that trained it (--save)
        prompt = (json.loads(saved.read_text()) if saved.is_file()
                  else torch.randint(0, model.config.vocab_size, (args.prompt,), generator=g).tolist())
        source = args.model
    else:
        cfg = HybridConfig.from_name(args.preset, num_nextn_predict_layers=1, mtp_pattern="*-")
        model = HybridLM(cfg)
        phrases = torch.randint(0, cfg.vocab_size, (args.phrases, args.phrase_len), generator=g)
        print(f"training {args.preset} + MTP head ('*-', {args.depths} depths) for {args.steps} steps on "
              f"{args.phrases} random {args.phrase_len}-token phrases", flush=True)
        train(model, phrases, args.steps, args.depths, seq_len=128, batch=16)
        prompt = synthetic_batch(phrases, 1, args.prompt - 1, torch.Generator().manual_seed(7))[0].tolist()
        source = f"{args.preset} trained {args.steps} steps here"
        if args.save:
            model.save_pretrained(args.save)
            (Path(args.save) / "bench_prompt.json").write_text(json.dumps(prompt))

    params = SamplingParams(max_tokens=args.new_tokens, temperature=0, ignore_eos=True)

    def run(ks: list, n: int = 1) -> dict:
        """{k: (best seconds, completions, seconds of every round, CPU seconds of every round)} for n copies of the
        prompt decoded together with speculative_tokens k (0: plain; "llama.cpp": the llama.cpp arm, batch 1) over
        --repeats rounds; each round runs every arm once, back to back, so `paired` can compare arms within a round
        (load on a shared machine changes from round to round). CPU seconds are this process's
        (`time.process_time`): time spent waiting for a core that other work holds is left out."""
        arms = {k: (llama_arm if k == "llama.cpp" else Engine(model, max_slots=max(1, n), max_waiting=n,
                                                              speculative_tokens=k, decode_mode=args.plain_mode))
                for k in ks}
        out: dict = {}
        for i in range(args.repeats + 1):  # round 0 warms up
            for k, arm in arms.items():
                t0, c0 = time.perf_counter(), time.process_time()
                if callable(arm):
                    results = [arm()]
                else:
                    reqs = [arm.submit(prompt, params) for _ in range(n)]
                    arm.run_until_idle()
                    results = [r.result() for r in reqs]
                t, c = time.perf_counter() - t0, time.process_time() - c0
                if i:
                    best, done, rounds, cpu = out.get(k, (t, None, [], []))
                    out[k] = (min(best, t), done if done is not None and best <= t else results, [*rounds, t],
                              [*cpu, c])
        return out

    def paired(timed, k, cpu: bool = False) -> float:
        """Median over rounds of plain seconds / arm k's seconds in the same round (wall, or CPU with `cpu`)."""
        i = 3 if cpu else 2
        return statistics.median(a / b for a, b in zip(timed[0][i], timed[k][i]))

    llama_arm = None
    if args.llama:
        llama_arm = make_llama_arm(model, prompt, args.new_tokens, args.threads)

    load_before = os.getloadavg()
    print(f"load average before measuring (1/5/15 min): {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    timed = run([0, *args.k, *(["llama.cpp"] if llama_arm else [])])
    t_plain, [plain], *_ = timed[0]
    rows = []
    for k in args.k:
        t, [c], *_ = timed[k]
        rows.append({"k": k, "tok_s": args.new_tokens / t, "paired_ratio": paired(timed, k),
                     "paired_cpu_ratio": paired(timed, k, cpu=True),
                     "same": c.token_ids == plain.token_ids,
                     "acceptance_rate": c.acceptance_rate, "mean_accepted_length": c.mean_accepted_length})
    plain_tps = args.new_tokens / t_plain
    print(f"model: {source}; {model.num_params():,} params (+{model.num_params(mtp=True) - model.num_params():,} "
          f"MTP), pattern {model.config.pattern} + MTP {model.config.mtp_pattern!r}; prompt {len(prompt)} tokens, "
          f"{args.new_tokens} new tokens, greedy, {torch.get_num_threads()} threads; time includes prefill")
    print(f"{'plain decode':<18} batch 1   {plain_tps:8.1f} tok/s")
    for r in rows:
        print(f"{'speculative K=' + str(r['k']):<18} batch 1   {r['tok_s']:8.1f} tok/s  "
              f"acceptance {r['acceptance_rate']:.2f}  mean accepted length {r['mean_accepted_length']:.2f} "
              f"of {r['k'] + 1}  same tokens: {r['same']}")
    llama = None
    if llama_arm:
        t, [ids], *_ = timed["llama.cpp"]
        same = sum(a == b for a, b in zip(ids, plain.token_ids))
        llama = {"tok_s": args.new_tokens / t, "paired_ratio_to_plain": paired(timed, "llama.cpp"),
                 "paired_cpu_ratio_to_plain": paired(timed, "llama.cpp", cpu=True), "same_prefix": same}
        print(f"{'llama.cpp f32':<18} batch 1   {llama['tok_s']:8.1f} tok/s  (the main model; the GGUF has no MTP "
              f"head) greedy tokens equal to hytron's: {same} of {len(ids)}")
    best = max(rows, key=lambda r: r["paired_ratio"])
    splits = {k: time_split(model, prompt, k, args.new_tokens, args.plain_mode) for k in (0, best["k"])}
    for k, split in splits.items():
        print(f"time split, batch 1, {'plain' if not k else 'K=' + str(k)} (ms; calls): "
              + "  ".join(f"{name} {ms:.0f}" if not name.endswith(" calls") else f"({ms})"
                          for name, ms in split.items()))
    batched = None
    if args.batch > 1:
        both = run([0, best["k"]], args.batch)
        (t_b0, plain_outs, *_), (t_bk, outs, *_) = both[0], both[best["k"]]
        batched = {"n": args.batch, "plain_tok_s": args.batch * args.new_tokens / t_b0,
                   "spec_tok_s": args.batch * args.new_tokens / t_bk, "paired_ratio": paired(both, best["k"]),
                   "same": [o.token_ids for o in outs] == [o.token_ids for o in plain_outs]}
        print(f"{'plain decode':<18} batch {args.batch:<3} {batched['plain_tok_s']:8.1f} tok/s")
        print(f"{'speculative K=' + str(best['k']):<18} batch {args.batch:<3} {batched['spec_tok_s']:8.1f} tok/s  "
              f"same tokens: {batched['same']}")
    served = None
    if args.serve > 1:
        served = measure_serve(model, prompt, args, best["k"])
    load_after = os.getloadavg()
    print(f"load average after measuring (1/5/15 min): {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"source": source, "plain_tok_s": plain_tps, "speculative": rows, "batched": batched,
                       "threads": args.threads, "loadavg_before": load_before, "loadavg_after": load_after,
                       "time_split_ms": splits, "llama_cpp": llama, "serve": served}, f,
                      indent=2)
    for r in rows:
        print(f"RATIO batch-1 decode tokens/s speculative K={r['k']} / plain ({args.plain_mode}) = "
              f"{r['tok_s'] / plain_tps:.2f}x best rounds, {r['paired_ratio']:.2f}x median of same-round ratios, "
              f"{r['paired_cpu_ratio']:.2f}x of same-round CPU-time ratios")
    if llama:
        print(f"RATIO batch-1 decode tokens/s llama.cpp f32 / hytron plain ({args.plain_mode}) = "
              f"{llama['paired_ratio_to_plain']:.2f}x median of same-round ratios, "
              f"{llama['paired_cpu_ratio_to_plain']:.2f}x CPU time; best speculative K={best['k']} / llama.cpp = "
              f"{best['tok_s'] / llama['tok_s']:.2f}x best rounds")
    if served:
        print(f"RATIO hytron serve, {served['n']} concurrent requests, tokens/s speculative K={served['k']} / plain = "
              f"{served['paired_ratio']:.2f}x median of same-round ratios")
    if batched:
        print(f"RATIO batch-{args.batch} decode tokens/s speculative K={best['k']} / plain = "
              f"{batched['spec_tok_s'] / batched['plain_tok_s']:.2f}x best rounds, {batched['paired_ratio']:.2f}x "
              "median of same-round ratios")


if __name__ == "__main__":
    main()
