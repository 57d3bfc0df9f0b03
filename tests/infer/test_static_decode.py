"""The engine's static decode step (`decode_mode`): the tokens of the model's own cached forward, on a random model
and on a checkpoint written by transformers (whose own `generate` gives the same greedy tokens)."""

import pytest
import torch

from hytron.infer import Engine, SamplingParams, generate
from hytron.model import HybridConfig, HybridLM, kernels
from tests.conftest import randomize
from tests.infer.conftest import prompts


def test_static_step_gives_the_eager_tokens_batched_and_alone(model):
    ps = prompts(6)
    greedy = SamplingParams(max_tokens=40, temperature=0)
    # sampled, penalised, with logprobs and a stop id: everything the engine does with the step's logits
    sampled = SamplingParams(max_tokens=40, temperature=0.9, top_p=0.95, seed=3, repetition_penalty=1.2,
                             logprobs=2, stop_token_ids=(17,))
    eager = {}
    for params in (greedy, sampled):
        runs = {mode: generate(model, ps, params, max_slots=3, prefill_chunk=7, decode_mode=mode)
                for mode in ("eager", "static")}
        assert [c.token_ids for c in runs["static"]] == [c.token_ids for c in runs["eager"]]
        logprobs = {mode: [lp.logprob for c in cs for lp in c.logprobs] for mode, cs in runs.items()}
        assert logprobs["static"] == pytest.approx(logprobs["eager"], abs=1e-5)
        eager[params.temperature] = [c.token_ids for c in runs["eager"]]
    assert len(set(map(tuple, eager[0]))) > 1 and eager[0] != eager[0.9]  # lively model, two different runs
    alone = [generate(model, [p], greedy, decode_mode="static")[0].token_ids for p in ps[:2]]
    assert alone == eager[0][:2]

def test_static_cache_is_sized_once_for_the_whole_completion(model):
    """No reallocation while decoding: the batched cache holds prompt + max_tokens from the start (the eager path
    doubles its KV buffers as rows grow)."""
    engine = Engine(model, max_slots=2)
    req = engine.submit(prompts(1)[0], SamplingParams(max_tokens=70, temperature=0, ignore_eos=True))
    engine.step()
    cache, decoder = engine._cache, engine._decoder
    assert decoder is not None and decoder.mode == "eager"
    assert cache.capacity >= len(req.prompt_ids) + 70
    kv = [s.k.data_ptr() for s in cache.layers if hasattr(s, "k")]
    while not req.done:
        engine.step()
        assert engine._cache is cache or req.done
    assert kv == [s.k.data_ptr() for s in cache.layers if hasattr(s, "k")]
    assert len(req.result().token_ids) == 70


def test_unknown_decode_mode_is_refused_and_speculation_keeps_the_mode(model):
    with pytest.raises(ValueError, match="decode_mode.*'fast'"):
        Engine(model, decode_mode="fast")
    mtp = HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=96, num_nextn_predict_layers=1,
                                          mtp_pattern="*-")).eval()
    for mode in ("eager", "static", "compile"):  # speculation runs its own static steps (tests/infer/test_speculative)
        assert Engine(mtp, speculative_tokens=2, decode_mode=mode).decode_mode == mode


def _theirs_greedy(directory, prompt: list[int], n: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        out = theirs.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_transformers_checkpoint_decodes_as_transformers_generate(foreign):
    directory = foreign("plain")
    ours = HybridLM.from_pretrained(directory).eval()
    prompt = torch.randint(1, ours.config.vocab_size, (23,), generator=torch.Generator().manual_seed(5)).tolist()
    params = SamplingParams(max_tokens=48, temperature=0, ignore_eos=True)
    static = generate(ours, [prompt], params, decode_mode="static")[0].token_ids
    assert static == generate(ours, [prompt], params, decode_mode="eager")[0].token_ids
    assert static == _theirs_greedy(directory, prompt, 48)


@pytest.mark.slow
def test_compiled_step_gives_the_eager_tokens_and_reports_its_compile_time_once(foreign):
    """decode_mode="compile": the step torch.compiled, the same greedy tokens alone and batched; compiled once per
    model shape (one graph for one row, one for any batch of several rows, whatever the cache's capacity),
    reported in the engine's stats."""
    ours = HybridLM.from_pretrained(foreign("plain")).eval()
    ps = [torch.randint(1, ours.config.vocab_size, (n,), generator=torch.Generator().manual_seed(n)).tolist()
          for n in (9, 30)]
    params = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    want = [c.token_ids for c in generate(ours, ps, params, decode_mode="eager")]
    engine = Engine(ours, max_slots=1, decode_mode="compile")
    reqs = [engine.submit(p, params) for p in ps]  # both fit a cache of the same capacity: one compilation
    engine.run_until_idle()
    assert [r.result().token_ids for r in reqs] == want
    assert engine.stats["decode_compile_ms"] > 0
    compiled = engine.stats["decode_compile_ms"]
    again = engine.submit(ps[0], params)
    engine.run_until_idle()
    assert again.result().token_ids == want[0] and engine.stats["decode_compile_ms"] == compiled
    assert engine.warmup() == 0.0  # compiled already, in this process: nothing to pay again
    batched = Engine(ours, max_slots=3, decode_mode="compile")
    assert batched.warmup() > 0  # the several-rows graph
    compiled = batched.stats["decode_compile_ms"]
    ps.append(torch.randint(1, ours.config.vocab_size, (17,), generator=torch.Generator().manual_seed(17)).tolist())
    # the batch shrinks 3 -> 2 -> 1 as requests finish, and its cache is rebuilt each time with another capacity
    lengths = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True, logprobs=1) for n in (40, 25, 12)]
    alone = [generate(ours, [p], sp, decode_mode="eager")[0] for p, sp in zip(ps, lengths)]
    reqs = [batched.submit(p, sp) for p, sp in zip(ps, lengths)]
    batched.run_until_idle()
    assert [r.result().token_ids for r in reqs] == [c.token_ids for c in alone]
    for r, c in zip(reqs, alone):
        assert [lp.logprob for lp in r.result().logprobs] == pytest.approx([lp.logprob for lp in c.logprobs], abs=1e-4)
    assert batched.stats["decode_compile_ms"] == compiled  # no compilation after the warm-up


@pytest.mark.slow
def test_compiled_step_of_a_moe_model_gives_the_eager_tokens():
    """MoE routing breaks the compiled step into several graphs (a data-dependent shape): the engine still gives
    the eager tokens alone and batched under decode_mode "compile" (it raised "Recompilation triggered with
    skip_guard_eval_unsafe" at the second token, failing every request of a MoE model under `hytron serve`)."""
    torch.manual_seed(0)
    moe = randomize(HybridLM(HybridConfig.from_name("hytron-tiny-moe", vocab_size=96)).eval())
    assert not kernels.compiles_whole(moe)
    ps = prompts(4, seed=12)
    params = SamplingParams(max_tokens=8, temperature=0)
    want = [generate(moe, [p], params, decode_mode="eager")[0].token_ids for p in ps]
    assert [generate(moe, [p], params, decode_mode="compile")[0].token_ids for p in ps[:2]] == want[:2]
    engine = Engine(moe, max_slots=3, decode_mode="compile")
    reqs = [engine.submit(p, params) for p in ps]
    engine.run_until_idle()
    assert [r.result().token_ids for r in reqs] == want
    assert engine.decode_mode == "compile"
    # with a MoE MTP head (Nemotron 3 Super's "*E"), speculation under "compile" gives the same tokens too
    torch.manual_seed(0)
    head = randomize(HybridLM(HybridConfig.from_name("hytron-tiny-moe", vocab_size=96, num_nextn_predict_layers=1,
                                                     mtp_pattern="*E")).eval())
    want = [generate(head, [p], params, decode_mode="eager")[0].token_ids for p in ps]
    got = generate(head, ps, params, decode_mode="compile", speculative_tokens=2, max_slots=3)
    assert [c.token_ids for c in got] == want
    assert [generate(head, [p], params, decode_mode="compile", speculative_tokens=2)[0].token_ids
            for p in ps[:2]] == want[:2]


def test_a_step_that_cannot_compile_warns_and_decodes_uncompiled(model, monkeypatch):
    def broken():
        def step(*a, **kw):
            raise RuntimeError("no C++ compiler here")
        return step

    monkeypatch.setattr(kernels, "_compiled_decode_step", broken)
    engine = Engine(model, max_slots=1, decode_mode="compile")
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler here"):
        assert engine.warmup() == 0.0
    assert engine.decode_mode == "static"
    params = SamplingParams(max_tokens=10, temperature=0)
    p = prompts(1)[0]
    req = engine.submit(p, params)
    engine.run_until_idle()
    assert req.result().token_ids == generate(model, [p], params, decode_mode="eager")[0].token_ids
