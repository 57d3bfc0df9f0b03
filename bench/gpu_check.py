"""GPU check: one run that proves hytron's CUDA paths and measures training and decode throughput, MFU and memory.

Stages, each with its own time budget inside one global budget (default 480 s), each in try/except (an error
is recorded in the summary and the run goes on), each with its peak memory:
  env      device, versions, optional kernels present
  peak     the measured bf16 matmul rate (8192^3) and device copy bandwidth: the practical ceilings
  tests    `pytest -m gpu` (tests/gpu, tests/model): every CUDA fast path against its CPU reference
  train    a ~1.2B Nemotron-H-pattern model at seq 4096: hytron bf16 (eager and torch.compile'd blocks) vs
           transformers NemotronHForCausalLM (same config, weights and batch), hytron fp8 (native
           torch._scaled_mm) and nvfp4 (emulated): tokens/s, MFU vs 989 TFLOP/s and vs the measured matmul
  decode   batch-1 greedy decode: hytron eager, hytron CUDA graph, transformers generate; batched decode at
           8/32/128 sequences (hytron CUDA graph, the hytron serving engine, transformers generate)
  hybrid   decode tokens/s of the hybrid vs its equal-parameter attention twin at 16k and 64k context
OUT/summary.json is rewritten after every stage (partial results survive a kill); OUT/summary.md holds the
same as tables, goals and ratios last. `--dry-run` runs every stage on CPU at tiny sizes (CI runs it).

    bash bench/gpu.sh --out OUT            # on the GPU machine (<= 8 min on one H200)
    bash bench/gpu.sh --dry-run --out OUT  # anywhere, in about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from hytron.model import HybridConfig, HybridLM, kernels

H200_BF16_PEAK = 989e12  # dense bf16 tensor-core FLOP/s, NVIDIA H100/H200 SXM datasheet
# ~1.2B parameters in the Nemotron-H pattern (M/-/* alternating, ~9% attention), Nemotron-H widths per head
GPU_MODEL = dict(pattern="M-M-M-M*-M-M-M-M-M*-M-", vocab_size=131072, hidden_size=2048, intermediate_size=8192,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, mamba_num_heads=64,
                 mamba_head_dim=64, ssm_state_size=128, n_groups=8, chunk_size=128, max_position_embeddings=65536)
STAGES = {"env": 5, "peak": 10, "tests": 90, "train": 180, "decode": 80, "hybrid": 45}  # seconds, scaled to --budget
# training variants, in order, and their shares of the train stage's time: compiling the blocks takes longest
# and its warm-up cannot stop early, so it goes last, where running over costs no other variant
TRAIN_VARIANTS = {"hytron-bf16": 1.0, "transformers-bf16": 1.0, "hytron-fp8": 1.0, "hytron-nvfp4": 1.0,
                  "hytron-lora-bf16": 1.0, "hytron-bf16-compiled": 2.5}
GOALS = {  # name: (what, target); a value >= target meets the goal
    "train_vs_transformers": ("hytron / transformers training tokens/s, bf16", 1.2),
    "mfu_bf16": ("hytron bf16 MFU vs 989 TFLOP/s", 0.40),
    "fp8_vs_bf16": ("hytron native fp8 / bf16 training tokens/s", 1.3),
    "batched_vs_sequential_32": ("decode tokens/s, 32 sequences batched / one at a time", 10.0),
    "hybrid_vs_attention_longest": ("decode tokens/s hybrid / attention twin at the longest context", 6.0),
}


class StageTimeout(BaseException):  # noqa: N818 - a BaseException, so libraries' `except Exception` let it through
    """A stage ran past its budget (raised by the alarm)."""


class Run:
    """Sizes, device, deadlines and the summary being written."""

    def __init__(self, args):
        self.dry = args.dry_run
        self.device = torch.device("cpu" if self.dry or not torch.cuda.is_available() else "cuda")
        self.cuda = self.device.type == "cuda"
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.stage_peak = 0.0
        self.budget = args.budget
        wanted = [s.strip() for s in args.stages.split(",") if s.strip() in STAGES]
        scale = args.budget / max(1, sum(STAGES[k] for k in wanted))  # the budget is shared by the chosen stages
        self.stage_budget = {k: v * scale for k, v in STAGES.items()}
        if self.dry:
            # every block kind but MoE (which the gpu tests cover), in 5 blocks: CI's CPUs are slow and shared
            self.model_cfg = HybridConfig.from_name("hytron-tiny", pattern="M*-M-", hidden_size=64,
                                                    intermediate_size=128, max_position_embeddings=8192)
            self.sizes = dict(seq=32, batch=2, warmup=1, steps=1, prompt=8, new_tokens=6, batched_new_tokens=3,
                              batches=[8, 32, 128], decode_repeats=1, contexts=[512, 2048], hybrid_batch=2,
                              hybrid_steps=3, matmul=256, compile_backend="eager")
        else:
            self.model_cfg = HybridConfig(name="gpu-1b", **GPU_MODEL)
            self.sizes = dict(seq=4096, batch=4, warmup=2, steps=5, prompt=128, new_tokens=128, batched_new_tokens=64,
                              batches=[8, 32, 128], decode_repeats=2, contexts=[16384, 65536], hybrid_batch=8,
                              hybrid_steps=32,
                              matmul=8192, compile_backend="inductor")
        self.summary = {"meta": {"dry_run": self.dry, "device": str(self.device), "argv": sys.argv[1:],
                                 "budget_s": self.budget, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                         time.gmtime())},
                        "config": {"model": self.model_cfg.to_dict(), "params": self.model_cfg.num_params(),
                                   **self.sizes},
                        "stages": {}, "goals": {}, "finished": False}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        """Start a new peak-memory window; the stage's peak (`stage_peak_gib`) keeps the maximum of all."""
        self.stage_peak = max(self.stage_peak, self.peak_gib())
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        """Peak device memory since the last reset (CUDA), or the process's peak RSS on CPU."""
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    def stage_peak_gib(self) -> float:
        return max(self.stage_peak, self.peak_gib())

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def write(self) -> None:
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=2, default=str))
        tmp.replace(self.out / "summary.json")
        (self.out / "summary.md").write_text(markdown(self.summary))


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise StageTimeout in this (main) thread after `seconds`: a hung stage cannot eat the next ones' time."""
    def fire(signum, frame):
        raise StageTimeout(f"stage ran past its {seconds:.0f} s budget")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_stage(run: Run, name: str, fn) -> None:
    budget = min(run.stage_budget[name], run.left() - 2)
    entry = {"status": "skipped", "seconds": 0.0, "budget_s": round(budget, 1), "peak_mem_gib": 0.0,
             "error": None, "result": {}}
    run.summary["stages"][name] = entry
    if budget < 3:
        entry["error"] = "no time left in the global budget"
        run.write()
        return
    print(f"== {name} (budget {budget:.0f} s, {run.left():.0f} s left in all)", flush=True)
    run.reset_peak()
    run.stage_peak = 0.0
    start = time.monotonic()
    deadline = start + budget
    try:
        with alarm(budget + 10):  # stages stop themselves at `deadline`; the alarm is the backstop
            fn(run, entry["result"], deadline)
        entry["status"] = "ok"
    except (Exception, StageTimeout) as e:  # noqa: BLE001 - record, go on: one stage must not hide the others
        entry["status"] = "timeout" if isinstance(e, StageTimeout) else "error"
        entry["error"] = f"{type(e).__name__}: {e}"
        entry["traceback"] = traceback.format_exc(limit=6)
        print(f"   {entry['status']}: {entry['error']}", flush=True)
    entry["seconds"] = round(time.monotonic() - start, 2)
    entry["peak_mem_gib"] = round(run.stage_peak_gib(), 3)
    run.free()
    run.write()


def timed(run: Run, fn, warmup: int, steps: int, deadline: float, min_steps: int = 1) -> list[float]:
    """Run fn `warmup` times, then up to `steps` timed runs while time remains (at least `min_steps`)."""
    for _ in range(warmup):
        fn()
    run.sync()
    times = []
    while len(times) < steps:
        t = time.perf_counter()
        fn()
        run.sync()
        times.append(time.perf_counter() - t)
        if len(times) >= min_steps and time.monotonic() + times[-1] > deadline:
            break
    return times


# ---- stages -----------------------------------------------------------------------------------------
def stage_env(run: Run, res: dict, deadline: float) -> None:
    import transformers

    res.update(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
               cuda=torch.version.cuda, kernels=kernels.kernels_available(), scan_backend=kernels.scan_backend())
    try:
        import triton
        res["triton"] = triton.__version__
    except ImportError:
        res["triton"] = None
    if run.cuda:
        p = torch.cuda.get_device_properties(0)
        res.update(gpu=p.name, capability=list(torch.cuda.get_device_capability()), memory_gib=p.total_memory / 2**30,
                   multiprocessors=p.multi_processor_count)
    else:
        res.update(gpu=None, cpu_threads=torch.get_num_threads())
    print(f"   {res}", flush=True)


def stage_peak(run: Run, res: dict, deadline: float) -> None:
    n = run.sizes["matmul"]
    dtype = torch.bfloat16 if run.cuda else torch.float32
    a, b = (torch.randn(n, n, device=run.device, dtype=dtype) for _ in range(2))
    reps = 20 if run.cuda else 2
    times = timed(run, lambda: [a @ b for _ in range(reps)], 1, 5, deadline)
    res["matmul_n"], res["matmul_dtype"] = n, str(dtype)
    res["matmul_tflops"] = 2 * n**3 * reps / min(times) / 1e12
    x = torch.randn(64 * 2**20 if run.cuda else 2**20, device=run.device)  # 256 MiB fp32 on GPU
    y = torch.empty_like(x)
    times = timed(run, lambda: [y.copy_(x) for _ in range(reps)], 1, 5, deadline)
    res["copy_gb_s"] = 2 * x.numel() * 4 * reps / min(times) / 1e9  # bytes read + written
    print(f"   matmul {res['matmul_tflops']:.1f} TFLOP/s ({dtype}), copy {res['copy_gb_s']:.0f} GB/s", flush=True)


def stage_tests(run: Run, res: dict, deadline: float) -> None:
    """pytest -v in a subprocess; results are read from its log, so a run cut short still reports each test."""
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "pytest", "-v", "-m", "gpu", "-p", "no:cacheprovider", "tests/gpu",
           "tests/model/test_kernels.py"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])}
    res["command"] = " ".join(cmd[1:])
    log_path = run.out / "tests.log"
    with open(log_path, "w") as log:
        try:
            res["returncode"] = subprocess.run(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env,
                                               timeout=max(5.0, deadline - time.monotonic())).returncode
        except subprocess.TimeoutExpired:
            res["returncode"] = None
    outcomes = {}
    for line in log_path.read_text(errors="replace").splitlines():
        m = re.match(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", line)
        if m:
            outcomes[m[1]] = m[2]
    res["tests"] = len(outcomes)
    res["passed"] = sum(o in ("PASSED", "XPASS") for o in outcomes.values())
    res["skipped"] = sum(o in ("SKIPPED", "XFAIL") for o in outcomes.values())
    res["failed"] = [t for t, o in outcomes.items() if o in ("FAILED", "ERROR")]
    print(f"   pytest: {res['passed']} passed, {res['skipped']} skipped, failed {res['failed']}", flush=True)
    if res["returncode"] is None:
        raise RuntimeError(f"gpu tests ran past the stage budget after {len(outcomes)} tests (see tests.log)")
    if res["returncode"] not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"gpu tests failed: {res['failed'][:5]} (see tests.log)")


def _hf_twin(run: Run, ours: HybridLM):
    """transformers NemotronHForCausalLM with the same config and the same weights as `ours`, on the device."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from hytron.model.hf import config_to_hf

    hf_logging.set_verbosity_error()
    d = config_to_hf(ours.config)
    d.pop("hytron", None)
    cfg = AutoConfig.for_model(d.pop("model_type"), **{k: v for k, v in d.items() if k != "architectures"})
    with torch.device(run.device):
        theirs = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=ours.lm_head.weight.dtype)
    state = {("model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
             for k, v in ours.state_dict().items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weight names differ from transformers: missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}")
    return theirs


def _train_one(run: Run, model, loss_fn, deadline: float, tokens: int) -> dict:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=run.cuda)
    model.train()

    def step():  # hytron's training precision "auto": bf16 autocast on CUDA, fp32 on CPU
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.cuda):
            loss = loss_fn(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    run.reset_peak()
    times = timed(run, step, run.sizes["warmup"], run.sizes["steps"], deadline)
    return {"tok_s": tokens / statistics.median(times), "step_s": statistics.median(times), "timed_steps": len(times),
            "peak_mem_gib": round(run.peak_gib(), 3)}


def stage_train(run: Run, res: dict, deadline: float) -> None:
    from hytron.lowp import convert

    s, cfg = run.sizes, run.model_cfg
    b, L = s["batch"], s["seq"]
    ids = torch.randint(0, cfg.vocab_size, (b, L + 1), device=run.device)
    with torch.device("meta"):  # closed-form FLOPs need only the shapes
        flops = HybridLM(cfg).flops_per_token(L)
    peak_mm = run.summary["stages"].get("peak", {}).get("result", {}).get("matmul_tflops")
    res.update(tokens_per_step=b * L, flops_per_token=flops, variants={})
    try:
        _train_variants(run, res, deadline, ids, flops, peak_mm, convert)
    finally:  # ratios from whatever finished, also when the stage ran out of time
        v = {k: x["tok_s"] for k, x in res["variants"].items() if "tok_s" in x}
        best_bf16 = max((v[k] for k in ("hytron-bf16", "hytron-bf16-compiled") if k in v), default=None)
        if best_bf16 and "transformers-bf16" in v:
            res["ratio_hytron_vs_transformers"] = best_bf16 / v["transformers-bf16"]
        if best_bf16:
            res["best_bf16_mfu_vs_989"] = flops * best_bf16 / H200_BF16_PEAK
        if "hytron-bf16" in v and "hytron-fp8" in v:
            res["ratio_fp8_vs_bf16"] = v["hytron-fp8"] / v["hytron-bf16"]
        if "hytron-bf16" in v and "hytron-lora-bf16" in v:
            res["ratio_lora_vs_full_bf16"] = v["hytron-lora-bf16"] / v["hytron-bf16"]
        if "hytron-bf16" in v and "hytron-nvfp4" in v:
            res["nvfp4_emulation_overhead"] = v["hytron-bf16"] / v["hytron-nvfp4"]


def _train_variants(run: Run, res: dict, deadline: float, ids, flops: float, peak_mm, convert) -> None:
    s, cfg = run.sizes, run.model_cfg
    b, L = s["batch"], s["seq"]
    ours_loss = lambda m: m.loss(ids[:, :-1], ids[:, 1:])  # noqa: E731
    theirs_loss = lambda m: m(input_ids=ids[:, :-1], labels=ids[:, :-1], use_cache=False).loss  # noqa: E731
    model = None
    names = list(TRAIN_VARIANTS)
    for i, name in enumerate(names):
        weight = TRAIN_VARIANTS[name] / sum(TRAIN_VARIANTS[n] for n in names[i:])
        share = (deadline - time.monotonic()) * weight  # this variant's part of what is left
        if share < 2:
            res["variants"][name] = {"error": "skipped: no time left in the stage"}
            continue
        res["variants"][name] = {"error": "did not finish within the stage budget"}  # replaced when it does
        torch.manual_seed(0)
        try:
            with torch.device(run.device):
                model = HybridLM(cfg)
            if name.startswith("transformers"):
                model, ours = _hf_twin(run, model), model
                del ours
                fn = theirs_loss
            else:
                fn = ours_loss
            if name == "hytron-fp8":
                convert(model, "fp8")
            elif name == "hytron-nvfp4":
                convert(model, "nvfp4")
            elif name == "hytron-lora-bf16":  # `hytron lora`'s setup: bf16 frozen base, fp32 adapters (r 16)
                from hytron.tune.lora import LoRAConfig, apply_lora

                apply_lora(model.to(torch.bfloat16), LoRAConfig(r=16, alpha=32))
            elif name.endswith("compiled"):
                kernels.compile_blocks(model, backend=s["compile_backend"])
            r = _train_one(run, model, fn, time.monotonic() + share, b * L)
            r["mfu_vs_989"] = flops * r["tok_s"] / H200_BF16_PEAK
            if peak_mm:
                r["mfu_vs_measured_matmul"] = flops * r["tok_s"] / (peak_mm * 1e12)
            res["variants"][name] = r
            print(f"   {name:22s} {r['tok_s']:10.0f} tok/s  MFU {100 * r['mfu_vs_989']:5.1f}%  "
                  f"peak {r['peak_mem_gib']:.1f} GiB", flush=True)
        except Exception as e:  # noqa: BLE001 - one variant failing (e.g. out of memory) must not stop the rest
            res["variants"][name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            print(f"   {name}: {res['variants'][name]['error']}", flush=True)
        model = None
        run.free()
    if not any("tok_s" in v for v in res["variants"].values()):
        raise RuntimeError("no training variant finished: " + "; ".join(f"{k}: {v.get('error')}"
                                                                          for k, v in res["variants"].items()))


def _inference_model(run: Run, cfg: HybridConfig) -> HybridLM:
    torch.manual_seed(0)
    with torch.device(run.device):
        model = HybridLM(cfg).eval()
    return model.to(torch.bfloat16) if run.cuda else model


@torch.inference_mode()
def _greedy(run: Run, model, prompt: torch.Tensor, new_tokens: int, graphed: bool, clock: list) -> torch.Tensor:
    """Prefill `prompt` (n, P), then greedy-decode `new_tokens` per row; argmax stays on the device.

    Appends the seconds of the decode loop alone (after prefill and graph capture) to `clock`."""
    cache = model.new_cache(prompt.size(0), capacity=prompt.size(1) + new_tokens + 1)
    tok = model(prompt, cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
    out = [tok]
    step = kernels.StaticDecoder(model, cache).step if graphed else (lambda t: model(t, cache)[:, -1])
    run.sync()
    t = time.perf_counter()
    for _ in range(new_tokens - 1):
        tok = step(tok).argmax(-1, keepdim=True)
        out.append(tok)
    run.sync()
    clock.append(time.perf_counter() - t)
    return torch.cat(out, 1)


def stage_decode(run: Run, res: dict, deadline: float) -> None:
    from hytron.infer import SamplingParams, generate

    s, cfg = run.sizes, run.model_cfg
    model = _inference_model(run, cfg)
    try:
        theirs, hf_error = _hf_twin(run, model).eval(), None
    except Exception as e:  # noqa: BLE001 - hytron's own figures still count
        theirs, hf_error = None, f"{type(e).__name__}: {e}"
    gen = torch.Generator().manual_seed(0)

    @torch.inference_mode()
    def hf_generate(prompt, n):
        if theirs is None:
            raise RuntimeError(f"no transformers model: {hf_error}")
        return theirs.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                               pad_token_id=0)[:, prompt.size(1):]

    def engine_generate(prompt, n):
        params = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
        done = generate(model, prompt.tolist(), params, max_slots=prompt.size(0))
        bad = [c for c in done if c.finish_reason != "length" or len(c.token_ids) != n]
        if bad:
            raise RuntimeError(f"engine: {len(bad)} of {len(done)} requests ended with {bad[0].finish_reason!r}: "
                               f"{bad[0].error}")
        return torch.tensor([c.token_ids for c in done])

    rows = {}
    for batch in [1, *s["batches"]]:
        n = s["new_tokens"] if batch == 1 else s["batched_new_tokens"]
        prompt = torch.randint(16, cfg.vocab_size, (batch, s["prompt"]), generator=gen).to(run.device)
        row, outputs = {"new_tokens": n}, {}
        clocks = {"hytron_graph": [], "hytron_eager": []}
        runners = {"hytron_graph": lambda p=prompt, n=n, c=clocks["hytron_graph"]: _greedy(run, model, p, n, True, c),
                   "hytron_eager": lambda p=prompt, n=n, c=clocks["hytron_eager"]: _greedy(run, model, p, n, False, c),
                   "transformers": lambda p=prompt, n=n: hf_generate(p, n),
                   "hytron_engine": lambda p=prompt, n=n: engine_generate(p, n)}
        if batch != 1:
            runners.pop("hytron_eager")
        for name, fn in runners.items():
            if time.monotonic() > deadline - 5:
                row[name] = {"error": "skipped: no time left in the stage"}
                continue
            try:
                run.reset_peak()
                times = timed(run, lambda fn=fn, name=name, o=outputs: o.__setitem__(name, fn()),
                              0 if run.dry else 1, s["decode_repeats"], deadline - 5)
                row[name] = {"tok_s": batch * n / min(times), "peak_mem_gib": round(run.peak_gib(), 3)}
                if clocks.get(name):  # tokens/s of the decode loop alone, without prefill and capture
                    row[name]["decode_only_tok_s"] = batch * (n - 1) / min(clocks[name][-len(times):])
            except Exception as e:  # noqa: BLE001
                row[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        if "hytron_graph" in outputs and "transformers" in outputs:  # same weights: greedy tokens should agree
            a, b = outputs["hytron_graph"].cpu(), outputs["transformers"].cpu()
            row["same_tokens_fraction_vs_transformers"] = float((a == b).float().mean())
        rows[str(batch)] = row
        print(f"   batch {batch:4d}: " + "  ".join(f"{k} {v['tok_s']:9.1f}" if "tok_s" in v else f"{k} ERR"
                                                  for k, v in row.items() if isinstance(v, dict)), flush=True)
    res["rows"] = rows
    if not any("tok_s" in v for row in rows.values() for v in row.values() if isinstance(v, dict)):
        raise RuntimeError("no decode runner finished (see rows)")
    seq = rows.get("1", {}).get("hytron_graph", {}).get("tok_s")
    for batch in s["batches"]:
        got = rows.get(str(batch), {}).get("hytron_graph", {}).get("tok_s")
        if seq and got:
            res[f"ratio_batched_vs_sequential_{batch}"] = got / seq
    one = rows.get("1", {})
    if "tok_s" in one.get("hytron_graph", {}) and "tok_s" in one.get("transformers", {}):
        res["ratio_batch1_hytron_graph_vs_transformers"] = one["hytron_graph"]["tok_s"] / one["transformers"]["tok_s"]


def _filled_cache(model: HybridLM, batch: int, context: int, extra: int):
    """A cache holding `context` tokens per row with random state (a decode step's cost ignores the values)."""
    from hytron.model.cache import KVState, MambaState

    cache = model.new_cache(batch, capacity=context + extra + 1)
    for st in cache.layers:
        if isinstance(st, KVState):
            st.k.normal_()
            st.v.normal_()
        elif isinstance(st, MambaState):
            st.conv.normal_()
            st.ssm.normal_(std=0.1)
    cache.lengths.fill_(context)
    return cache


def stage_hybrid(run: Run, res: dict, deadline: float) -> None:
    from hytron.claims.hybrid import attention_twin

    s = run.sizes
    cfgs = {"hybrid": run.model_cfg, "attention": attention_twin(run.model_cfg)}
    res.update(batch=s["hybrid_batch"], steps=s["hybrid_steps"], patterns={k: c.pattern for k, c in cfgs.items()},
               params={k: c.num_params() for k, c in cfgs.items()}, points={})
    for ctx in s["contexts"]:
        point = {}
        for name, cfg in cfgs.items():
            model = _inference_model(run, cfg)
            run.reset_peak()
            with torch.inference_mode():
                cache = _filled_cache(model, s["hybrid_batch"], ctx, s["hybrid_steps"] + 4)
                dec = kernels.StaticDecoder(model, cache)
                tok = torch.zeros(s["hybrid_batch"], 1, dtype=torch.long, device=run.device)
                for _ in range(2):  # untimed replays
                    tok = dec.step(tok).argmax(-1, keepdim=True)
                run.sync()
                t = time.perf_counter()
                for _ in range(s["hybrid_steps"]):
                    tok = dec.step(tok).argmax(-1, keepdim=True)
                run.sync()
                dt = time.perf_counter() - t
            point[name] = {"tok_s": s["hybrid_batch"] * s["hybrid_steps"] / dt,
                           "state_mib_per_seq": cache.memory_bytes()["total"] / s["hybrid_batch"] / 2**20,
                           "peak_mem_gib": round(run.peak_gib(), 3)}
            del model, cache, dec
            run.free()
            if time.monotonic() > deadline:
                raise StageTimeout("hybrid stage ran out of time")
        point["ratio"] = point["hybrid"]["tok_s"] / point["attention"]["tok_s"]
        res["points"][str(ctx)] = point
        print(f"   context {ctx:6d}: hybrid {point['hybrid']['tok_s']:9.1f} tok/s  attention "
              f"{point['attention']['tok_s']:9.1f} tok/s  ratio {point['ratio']:.2f}x", flush=True)


# ---- summary ----------------------------------------------------------------------------------------
def goals(summary: dict) -> dict:
    st = {k: v.get("result", {}) for k, v in summary["stages"].items()}
    tr, de, hy = st.get("train", {}), st.get("decode", {}), st.get("hybrid", {})
    longest = max(hy.get("points", {}), key=int, default=None)
    values = {"train_vs_transformers": tr.get("ratio_hytron_vs_transformers"),
              "mfu_bf16": tr.get("best_bf16_mfu_vs_989"), "fp8_vs_bf16": tr.get("ratio_fp8_vs_bf16"),
              "batched_vs_sequential_32": de.get("ratio_batched_vs_sequential_32"),
              "hybrid_vs_attention_longest": hy["points"][longest]["ratio"] if longest else None}
    return {k: {"what": what, "target": target, "value": values[k],
                "met": None if values[k] is None else values[k] >= target} for k, (what, target) in GOALS.items()}


def _fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def markdown(summary: dict) -> str:
    m = summary["meta"]
    lines = [f"# hytron GPU check{' (dry run, CPU, tiny sizes)' if m['dry_run'] else ''}", "",
             f"started {m['started_utc']}, device {m['device']}, budget {m['budget_s']} s", "",
             "| stage | status | seconds | peak memory GiB | error |", "|---|---|---|---|---|"]
    for name, e in summary["stages"].items():
        lines.append(f"| {name} | {e['status']} | {e['seconds']} | {e['peak_mem_gib']} | {e['error'] or ''} |")
    st = {k: v["result"] for k, v in summary["stages"].items()}
    if st.get("env"):
        lines += ["", "env: " + ", ".join(f"{k} {_fmt(v)}" for k, v in st["env"].items())]
    if st.get("peak"):
        lines += ["", f"ceilings: matmul {_fmt(st['peak'].get('matmul_tflops'))} TFLOP/s, copy "
                      f"{_fmt(st['peak'].get('copy_gb_s'))} GB/s"]
    if st.get("tests"):
        t = st["tests"]
        lines += ["", f"gpu tests: {t.get('passed')} passed, {t.get('skipped')} skipped, failed {t.get('failed')}"]
    if st.get("train", {}).get("variants"):
        lines += ["", "| training (bf16 autocast on CUDA) | tokens/s | MFU vs 989 | MFU vs matmul | peak GiB |",
                  "|---|---|---|---|---|"]
        for name, v in st["train"]["variants"].items():
            lines.append(f"| {name} | " + (" | ".join(_fmt(v.get(k)) for k in ("tok_s", "mfu_vs_989",
                                                                                  "mfu_vs_measured_matmul",
                                                                                  "peak_mem_gib"))
                                            if "tok_s" in v else v.get("error", "")) + " |")
    if st.get("decode", {}).get("rows"):
        lines += ["", "| decode batch | runner | tokens/s (prefill included) | decode loop only | peak GiB |",
                  "|---|---|---|---|---|"]
        for batch, row in st["decode"]["rows"].items():
            for name, v in row.items():
                if isinstance(v, dict):
                    lines.append(f"| {batch} | {name} | {_fmt(v.get('tok_s', v.get('error')))} | "
                                 f"{_fmt(v.get('decode_only_tok_s', ''))} | {_fmt(v.get('peak_mem_gib'))} |")
    if st.get("hybrid", {}).get("points"):
        lines += ["", "| context | hybrid tok/s | attention tok/s | ratio |", "|---|---|---|---|"]
        for ctx, p in st["hybrid"]["points"].items():
            lines.append(f"| {ctx} | {_fmt(p['hybrid']['tok_s'])} | {_fmt(p['attention']['tok_s'])} | "
                         f"{_fmt(p['ratio'])} |")
    lines += ["", "| goal | target | value | met |", "|---|---|---|---|"]
    for g in summary["goals"].values():
        lines.append(f"| {g['what']} | {g['target']} | {_fmt(g['value'])} | {g['met']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory for summary.json, summary.md and tests.log")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, every stage executed")
    ap.add_argument("--budget", type=float, default=None, help="global seconds (default 480; dry run 240)")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    ap.add_argument("--batch", type=int, help="training batch (default 4 on GPU; e.g. 2 after an out-of-memory)")
    ap.add_argument("--seq", type=int, help="training sequence length (default 4096 on GPU)")
    args = ap.parse_args(argv)
    args.budget = args.budget or (240.0 if args.dry_run else 480.0)
    run = Run(args)
    for key in ("batch", "seq"):
        if getattr(args, key):
            run.sizes[key] = run.summary["config"][key] = getattr(args, key)
    if not run.dry and not run.cuda:
        print("warning: no CUDA device; running the full sizes on CPU will not finish (use --dry-run)", flush=True)
    if run.dry:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    fns = {"env": stage_env, "peak": stage_peak, "tests": stage_tests, "train": stage_train,
           "decode": stage_decode, "hybrid": stage_hybrid}
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(fns))
    if unknown:
        ap.error(f"--stages: unknown stage(s) {unknown}; known: {','.join(fns)}")
    run.write()
    for name in wanted:
        run_stage(run, name, fns[name])
        run.summary["goals"] = goals(run.summary)
        run.write()
    run.summary["finished"] = True
    run.summary["meta"]["seconds"] = round(time.monotonic() - run.t0, 1)
    run.write()
    print((run.out / "summary.md").read_text().rsplit("\n\n", 1)[-1], flush=True)  # the goals table, last
    return run.summary


if __name__ == "__main__":
    main()
