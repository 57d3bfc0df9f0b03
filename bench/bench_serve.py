"""Benchmark (a): generated tokens/s with 16 concurrent requests vs the same 16 requests one by one.

Measured twice: through the engine alone (`hytron.infer.Engine`, continuous batching over 16 slots) and
end to end through `hytron serve`'s HTTP app (uvicorn on 127.0.0.1, 16 concurrent `/v1/completions`
clients vs a loop of single requests). A random model (default hytron-small, vocabulary cut to a tokenizer
trained on a few KB) decodes fixed-length completions (`ignore_eos`), so every mode does identical work.
Ratio (concurrent / one by one) printed last.

    python bench/bench_serve.py [--preset hytron-small] [--requests 16] [--prompt 64] [--new-tokens 64]
                                 [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

import torch

from hytron.infer import Engine, SamplingParams
from hytron.model import HybridConfig, HybridLM
from hytron.tokenizer import Tokenizer

CORPUS = ["The river Alder rises on Mount Kell and flows north to the sea.\n",
          "Lesson 3: 17 + 25 = 42. First add the ones: 7 + 5 = 12, write 2, carry 1.\n",
          "Once upon a time, a fox named Ilse lived at the edge of the wood.\n"]


def engine_run(model, prompts, params, slots: int) -> float:
    engine = Engine(model, max_slots=slots, max_waiting=len(prompts))
    t0 = time.perf_counter()
    reqs = [engine.submit(p, params) for p in prompts]
    engine.run_until_idle()
    assert all(len(r.result().token_ids) == params.max_tokens for r in reqs)
    return time.perf_counter() - t0


def http_run(url: str, prompts, new_tokens: int, concurrent: bool) -> float:
    import httpx

    body = lambda p: {"prompt": p, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True}  # noqa: E731

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            t0 = time.perf_counter()
            if concurrent:
                rs = await asyncio.gather(*(c.post("/v1/completions", json=body(p)) for p in prompts))
            else:
                rs = [await c.post("/v1/completions", json=body(p)) for p in prompts]
            elapsed = time.perf_counter() - t0
        assert all(r.status_code == 200 and r.json()["usage"]["completion_tokens"] == new_tokens for r in rs)
        return elapsed

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="hytron-small")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = Tokenizer.train(CORPUS * 40, vocab_size=400)
    model = HybridLM(HybridConfig.from_name(args.preset, vocab_size=tok.vocab_size)).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(16, tok.vocab_size, (args.prompt,), generator=g).tolist() for _ in range(args.requests)]
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0, ignore_eos=True)
    total = args.requests * args.new_tokens
    print(f"model {args.preset}: {model.num_params():,} params, pattern {model.config.pattern}; {args.requests} "
          f"requests x ({args.prompt} prompt + {args.new_tokens} new tokens), {torch.get_num_threads()} threads")

    import uvicorn

    from hytron.serve import Backend, ServeConfig, create_app

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(Path(d) / "bench-model", tokenizer=tok)
        backend = Backend.load(Path(d) / "bench-model", ServeConfig(max_slots=args.requests, max_len=4096,
                                                                    max_tokens_limit=4096))
    server = uvicorn.Server(uvicorn.Config(create_app(backend), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    times = {"e_seq": [], "e_con": [], "h_seq": [], "h_con": []}
    try:
        engine_run(model, prompts[:2], params, slots=2)  # warm-up
        http_run(url, prompts[:2], args.new_tokens, concurrent=True)
        for _ in range(args.repeats):  # interleaved, best of: the machine is shared and noisy
            times["e_seq"].append(engine_run(model, prompts, params, slots=1))
            times["e_con"].append(engine_run(model, prompts, params, slots=args.requests))
            times["h_seq"].append(http_run(url, prompts, args.new_tokens, concurrent=False))
            times["h_con"].append(http_run(url, prompts, args.new_tokens, concurrent=True))
    finally:
        server.should_exit = True
        thread.join(30)
        backend.close()
    e_seq, e_con, h_seq, h_con = (min(times[k]) for k in ("e_seq", "e_con", "h_seq", "h_con"))
    print(f"engine  one by one  {total / e_seq:8.1f} tok/s ({e_seq:.2f}s)   "
          f"{args.requests} concurrent  {total / e_con:8.1f} tok/s ({e_con:.2f}s)   ratio {e_seq / e_con:.2f}x")
    print(f"http    one by one  {total / h_seq:8.1f} tok/s ({h_seq:.2f}s)   "
          f"{args.requests} concurrent  {total / h_con:8.1f} tok/s ({h_con:.2f}s)   ratio {h_seq / h_con:.2f}x")
    print(f"(best of {args.repeats} interleaved runs; all runs in seconds: "
          + ", ".join(f"{k} {[round(t, 2) for t in v]}" for k, v in times.items()) + ")")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"engine_seq_tok_s": total / e_seq, "engine_concurrent_tok_s": total / e_con,
                       "http_seq_tok_s": total / h_seq, "http_concurrent_tok_s": total / h_con}, f, indent=2)
    print(f"RATIO {args.requests} concurrent / one by one tokens/s: engine {e_seq / e_con:.2f}x, "
          f"http server {h_seq / h_con:.2f}x")


if __name__ == "__main__":
    main()
