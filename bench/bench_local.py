"""Benchmark: hytron vs llama.cpp on the same model and prompt, after `hytron export gguf`.

(1) batch-1 greedy decode tokens/s: hytron's engine (`hytron.infer.generate`) vs llama.cpp through
    llama-cpp-python (the model exported f32 and q8_0; a plain eval/argmax loop, no sampling chain);
(2) 16 concurrent `/v1/completions` requests over HTTP: `hytron serve` (16 slots, continuous batching) vs
    llama-cpp-python's server (`python -m llama_cpp.server`, which runs one request at a time: llama.cpp's
    own `llama-server` with parallel slots is a C++ tool that the Python package does not ship).
The model is the quickstart's shape (hytron-small, random weights, a 4k BPE trained on standard-library
text); every run decodes a fixed number of tokens (EOS ignored or banned) on the same number of threads.
Ratios (llama.cpp / hytron) printed last.

    python bench/bench_local.py [--threads 2] [--new-tokens 128] [--requests 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from hytron.export.gguf_model import export_gguf
from hytron.infer import SamplingParams, generate
from hytron.model import HybridConfig, HybridLM
from hytron.tokenizer import Tokenizer

MODULES = ("json/decoder.py", "textwrap.py", "argparse.py", "difflib.py", "csv.py")
PROMPT = ("The river Alder rises on Mount Kell and flows north to the sea. Along its banks the old mills "
          "still stand, and every spring the town of Brenna holds a fair where")


def build_model_dir(root: Path) -> Path:
    lib = Path(sysconfig.get_paths()["stdlib"])
    tok = Tokenizer.train([(lib / m).read_text(encoding="utf-8") for m in MODULES], vocab_size=4096)
    torch.manual_seed(0)
    model = HybridLM(HybridConfig.from_name("hytron-small", vocab_size=tok.vocab_size)).eval()
    return model.save_pretrained(root / "model", tokenizer=tok)


def hytron_decode(model, ids: list[int], n: int) -> float:
    done = generate(model, [ids], SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))[0]
    assert len(done.token_ids) == n
    return (n - 1) / (done.finish_time - done.first_token_time)


def llama_decode(llm, ids: list[int], n: int) -> float:
    llm.reset()
    llm.eval(ids)
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t0 = time.perf_counter()
    for _ in range(n - 1):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return (n - 1) / (time.perf_counter() - t0)


def http_burst(url: str, n_requests: int, new_tokens: int, extra: dict) -> float:
    import httpx

    body = {"prompt": PROMPT, "max_tokens": new_tokens, "temperature": 0, **extra}

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=1200) as c:
            t0 = time.perf_counter()
            rs = await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(n_requests)))
            elapsed = time.perf_counter() - t0
        for r in rs:
            assert r.status_code == 200, r.text[:300]
            assert r.json()["usage"]["completion_tokens"] == new_tokens, r.json()["usage"]
        return n_requests * new_tokens / elapsed

    return asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_hytron(model_dir: Path, args) -> float:
    import uvicorn

    from hytron.serve import Backend, ServeConfig, create_app

    backend = Backend.load(model_dir, ServeConfig(max_slots=args.requests, max_len=2048, threads=args.threads))
    server = uvicorn.Server(uvicorn.Config(create_app(backend), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        http_burst(url, 2, 8, {"ignore_eos": True})  # warm-up
        return max(http_burst(url, args.requests, args.new_tokens, {"ignore_eos": True})
                   for _ in range(args.repeats))
    finally:
        server.should_exit = True
        thread.join(30)
        backend.close()


def serve_llama_cpp(gguf_path: Path, stop_ids: tuple[int, ...], args) -> float | None:
    import httpx

    try:
        import llama_cpp.server  # noqa: F401  (the `server` extra: fastapi, sse-starlette, ...)
    except ImportError as e:
        print(f"llama-cpp-python's server is not installed ({e}); skipping the served comparison")
        return None
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path),
                             "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(args.threads),
                             "--n_threads_batch", str(args.threads), "--n_ctx", "2048", "--logits_all", "False",
                             "--verbose", "False"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("llama_cpp.server did not start")
        ban = {"logit_bias": {str(i): -100.0 for i in stop_ids}}  # it has no ignore_eos: ban the stop ids
        http_burst(url, 2, 8, ban)
        return max(http_burst(url, args.requests, args.new_tokens, ban) for _ in range(args.repeats))
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import llama_cpp

    with tempfile.TemporaryDirectory() as d:
        model_dir = build_model_dir(Path(d))
        files = {t: export_gguf(model_dir, Path(d) / f"model-{t}.gguf", t) for t in ("f32", "q8_0")}
        tok = Tokenizer.load(model_dir)
        model = HybridLM.from_pretrained(model_dir).eval()
        ids = tok.encode(PROMPT)
        print(f"model hytron-small: {model.num_params():,} params, pattern {model.config.pattern}; prompt "
              f"{len(ids)} tokens, {args.new_tokens} new tokens, {args.threads} threads, llama-cpp-python "
              f"{llama_cpp.__version__}")
        llms = {t: llama_cpp.Llama(model_path=str(f), n_ctx=2048, n_threads=args.threads,
                                   n_threads_batch=args.threads, verbose=False) for t, f in files.items()}
        rates: dict[str, list[float]] = {"hytron": [], "f32": [], "q8_0": []}
        hytron_decode(model, ids, 8)  # warm-up
        for llm in llms.values():
            llama_decode(llm, ids, 8)
        for _ in range(args.repeats):  # interleaved, best of: the machine is shared and noisy
            rates["hytron"].append(hytron_decode(model, ids, args.new_tokens))
            for t, llm in llms.items():
                rates[t].append(llama_decode(llm, ids, args.new_tokens))
        best = {k: max(v) for k, v in rates.items()}
        print(f"batch-1 decode  hytron engine {best['hytron']:8.1f} tok/s   llama.cpp f32 {best['f32']:8.1f} tok/s"
              f"   llama.cpp q8_0 {best['q8_0']:8.1f} tok/s")
        llms.clear()
        served_h = serve_hytron(model_dir, args)
        served_l = serve_llama_cpp(files["f32"], tok.stop_ids, args)
        lsrv = f"{served_l:8.1f} tok/s" if served_l else "n/a"
        print(f"{args.requests} concurrent over HTTP  hytron serve ({args.requests} slots) {served_h:8.1f} tok/s   "
              f"llama_cpp.server (f32, one request at a time) {lsrv}")
    figures = {"decode_tok_s": best, "served_tok_s": {"hytron": served_h, "llama_cpp_server": served_l},
               "runs": rates}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    served_ratio = f"{served_l / served_h:.2f}x" if served_l else "n/a"
    print(f"RATIO llama.cpp / hytron: batch-1 decode f32 {best['f32'] / best['hytron']:.2f}x, "
          f"q8_0 {best['q8_0'] / best['hytron']:.2f}x; {args.requests} concurrent served {served_ratio}")


if __name__ == "__main__":
    main()
