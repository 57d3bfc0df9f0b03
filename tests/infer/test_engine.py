"""The engine: batched == alone, per-request sampling, stops, cancellation, bounded queue, errors, threads."""

import threading
import time

import pytest
import torch

from hytron.infer import Engine, EngineClosed, PromptTooLong, QueueFull, SamplingParams, generate
from hytron.model import HybridConfig, HybridLM
from tests.conftest import randomize
from tests.infer.conftest import prompts


def test_greedy_batched_equals_alone_with_queueing_and_chunked_prefill(model):
    ps = prompts(7)
    params = SamplingParams(max_tokens=12, temperature=0)
    alone = [generate(model, [p], params)[0].token_ids for p in ps]
    # 3 slots for 7 requests: later ones are admitted while earlier ones decode; prompts prefilled in chunks of 5
    batched = [c.token_ids for c in generate(model, ps, params, max_slots=3, prefill_chunk=5)]
    assert batched == alone
    assert all(len(t) == 12 for t in alone)


def test_greedy_equals_plain_argmax_loop_without_cache(model):
    p = prompts(1, seed=4)[0]
    ids = torch.tensor([p])
    for _ in range(8):
        ids = torch.cat([ids, model(ids)[:, -1:].argmax(-1)], dim=1)
    got = generate(model, [p], SamplingParams(max_tokens=8, temperature=0))[0].token_ids
    assert got == ids[0, len(p):].tolist()


def test_seeded_sampling_is_reproducible_alone_or_batched(model):
    ps = prompts(4, seed=2)
    params = [SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, top_k=40, seed=100 + i) for i in range(4)]
    alone = [generate(model, [p], sp)[0].token_ids for p, sp in zip(ps, params)]
    batched = [c.token_ids for c in generate(model, ps, params, max_slots=4)]
    assert batched == alone
    other = generate(model, [ps[0]], SamplingParams(max_tokens=10, temperature=1.0, seed=999))[0].token_ids
    assert other != alone[0]


def test_different_params_per_request_in_one_batch(model):
    p = prompts(1, seed=3)[0]
    greedy = SamplingParams(max_tokens=6, temperature=0)
    hot = SamplingParams(max_tokens=6, temperature=5.0, seed=7)
    a, b, c = generate(model, [p, p, p], [greedy, hot, SamplingParams(max_tokens=2, temperature=0)], max_slots=3)
    assert a.token_ids == generate(model, [p], greedy)[0].token_ids
    assert b.token_ids == generate(model, [p], hot)[0].token_ids
    assert c.token_ids == a.token_ids[:2] and c.finish_reason == "length"


def test_stop_ids_end_generation_and_max_tokens_zero_only_prefills(model):
    p = prompts(1, seed=5)[0]
    free = generate(model, [p], SamplingParams(max_tokens=10, temperature=0))[0]
    stop_at = free.token_ids[3]
    first = free.token_ids.index(stop_at)
    got = generate(model, [p], SamplingParams(max_tokens=10, temperature=0), stop_ids=[stop_at])[0]
    assert got.token_ids == free.token_ids[: first + 1]
    assert got.finish_reason == "stop" and got.stop_reason == stop_at
    ignored = generate(model, [p], SamplingParams(max_tokens=10, temperature=0, ignore_eos=True), stop_ids=[stop_at])
    assert ignored[0].token_ids == free.token_ids
    zero = generate(model, [p], SamplingParams(max_tokens=0, prompt_logprobs=0))[0]
    assert zero.token_ids == [] and zero.finish_reason == "length" and len(zero.prompt_logprobs) == len(p) - 1


def chars_decode(ids):  # a toy detokenizer: token i is one character
    return "".join(chr(65 + i % 58) for i in ids)


def test_stop_strings_across_token_boundaries(model):
    p = prompts(1, seed=6)[0]
    free = generate(model, [p], SamplingParams(max_tokens=12, temperature=0), decode=chars_decode)[0]
    text = free.text
    assert text == chars_decode(free.token_ids)
    stop = text[4:7]  # three tokens: the match spans token boundaries
    cut = text.index(stop)
    got = generate(model, [p], SamplingParams(max_tokens=12, temperature=0, stop=[stop, "\x00never"]),
                   decode=chars_decode)[0]
    assert got.text == text[:cut] and got.finish_reason == "stop" and got.stop_reason == stop
    assert len(got.token_ids) == cut + len(stop)
    params = SamplingParams(max_tokens=12, temperature=0, stop=stop, include_stop_str_in_output=True)
    kept = generate(model, [p], params, decode=chars_decode)[0]
    assert kept.text == text[: cut + len(stop)]


def test_streamed_deltas_add_up_to_the_result(model):
    p = prompts(1, seed=7)[0]
    engine = Engine(model, decode=chars_decode)
    req = engine.submit(p, SamplingParams(max_tokens=9, temperature=0, logprobs=2))
    engine.run_until_idle()
    deltas = list(req)
    res = req.result()
    assert "".join(d.text for d in deltas) == res.text
    assert [t for d in deltas for t in d.token_ids] == res.token_ids
    assert [d.finish_reason for d in deltas] == [None] * (len(deltas) - 1) + ["length"]
    assert len(res.logprobs) == 9 and all(len(lp.top) == 2 for lp in res.logprobs)
    assert all(lp.top[0][1] >= lp.logprob for lp in res.logprobs)  # greedy picks the top token
    assert res.first_token_time is not None and res.finish_time >= res.first_token_time


def test_a_request_that_wants_only_the_result_gets_one_delta_and_the_whole_completion(model):
    """Once a caller says it waits for `result()`, the engine sends no deltas but the last: the Completion still
    carries every id, the whole text and every log-prob, equal to a streamed request's."""
    p = prompts(1, seed=7)[0]
    params = SamplingParams(max_tokens=9, temperature=0, logprobs=2)
    engine = Engine(model, decode=chars_decode)
    streamed, quiet = engine.submit(p, params), engine.submit(p, params)
    quiet.wants_only_the_result()
    engine.run_until_idle()
    list(streamed)
    deltas = list(quiet)
    want, got = streamed.result(), quiet.result()
    assert len(deltas) == 1 and deltas[0].finish_reason == "length"
    assert (got.token_ids, got.text, got.logprobs) == (want.token_ids, want.text, want.logprobs)
    assert len(got.token_ids) == 9 and got.text


def test_prompt_logprobs_match_a_full_forward(model):
    p = prompts(1, seed=8)[0] + prompts(1, seed=9)[0]
    got = generate(model, [p], SamplingParams(max_tokens=1, prompt_logprobs=3), prefill_chunk=7)[0].prompt_logprobs
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([p]))[0].float(), -1)
    want = [float(lp[j, p[j + 1]]) for j in range(len(p) - 1)]
    assert [x.token_id for x in got] == p[1:]
    assert [x.logprob for x in got] == pytest.approx(want, abs=1e-4)
    assert [x.top[0][0] for x in got] == lp[:-1].argmax(-1).tolist()


def test_cancel_frees_the_slot_and_others_continue(model):
    ps = prompts(3, seed=10)
    engine = Engine(model, max_slots=2)
    params = SamplingParams(max_tokens=30, temperature=0)
    a, b, c = (engine.submit(p, params) for p in ps)
    engine.step()
    engine.step()
    a.cancel()
    c.cancel()  # still waiting
    engine.step()
    assert engine.num_active == 1  # a's slot is free again within one step
    engine.run_until_idle()
    assert a.result().finish_reason == "cancelled" and len(a.result().token_ids) < 30
    assert c.result().finish_reason == "cancelled" and c.result().token_ids == []
    assert b.result().token_ids == generate(model, [ps[1]], params)[0].token_ids


def test_bounded_queue_and_admission_errors(model):
    engine = Engine(model, max_slots=1, max_waiting=2, max_len=64)
    params = SamplingParams(max_tokens=4, temperature=0)
    reqs = [engine.submit([20, 21], params) for _ in range(3)]  # 1 slot + 2 waiting
    with pytest.raises(QueueFull):
        engine.submit([20, 21], params)
    with pytest.raises(PromptTooLong, match="maximum context length is 64"):
        engine.submit([20] * 61, params)
    with pytest.raises(ValueError, match="token ids"):
        engine.submit([20, 96], params)
    with pytest.raises(ValueError, match="at least one token"):
        engine.submit([], params)
    engine.run_until_idle()
    assert all(r.result().finish_reason == "length" for r in reqs)
    engine.submit([20, 21], params)  # room again
    engine.close()
    with pytest.raises(EngineClosed):
        engine.submit([20, 21], params)


def test_sampling_params_name_the_bad_field():
    for kw, field in [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_k": -2}, "top_k"),
                      ({"max_tokens": -1}, "max_tokens"), ({"stop": [""]}, "stop"),
                      ({"temperature": float("nan")}, "temperature"), ({"max_thinking_tokens": -5},
                                                                       "max_thinking_tokens")]:
        with pytest.raises(ValueError, match=field):
            SamplingParams(**kw)


class Flaky(torch.nn.Module):
    """The real model, failing on demand: fault injection for the engine's error path."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.fail = model, model.config, False

    def forward(self, *a, **kw):
        if self.fail:
            raise RuntimeError("injected failure")
        return self.inner(*a, **kw)

    @property
    def backbone(self):  # what the engine's static decode step reads (decode_mode "static")
        if self.fail:
            raise RuntimeError("injected failure")
        return self.inner.backbone

    @property
    def lm_head(self):
        return self.inner.lm_head

    def new_cache(self, *a, **kw):
        return self.inner.new_cache(*a, **kw)


def test_a_failing_step_fails_its_requests_and_the_engine_keeps_serving(model, capsys):
    flaky = Flaky(model)
    engine = Engine(flaky, max_slots=2)
    params = SamplingParams(max_tokens=20, temperature=0)
    a = engine.submit([20, 21, 22], params)
    engine.step()
    flaky.fail = True
    engine.step()
    assert a.result(timeout=1).finish_reason == "error" and "injected failure" in a.result().error
    flaky.fail = False
    b = engine.submit([20, 21, 22], params)
    engine.run_until_idle()
    assert b.result().token_ids == generate(model, [[20, 21, 22]], params)[0].token_ids


def test_engine_thread_serves_concurrent_submitters(model):
    engine = Engine(model, max_slots=4, max_waiting=16).start()
    ps = prompts(8, seed=11)
    params = SamplingParams(max_tokens=6, temperature=0)
    results = [None] * len(ps)

    def client(i):
        results[i] = engine.submit(ps[i], params).result(timeout=60).token_ids

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(ps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    engine.close()
    assert results == [c.token_ids for c in generate(model, ps, params)]
    assert engine._thread is None


def test_a_failing_callback_does_not_stop_the_engine_thread(model, capsys):
    engine = Engine(model, max_slots=2).start()
    params = SamplingParams(max_tokens=5, temperature=0)

    def broken(delta):
        raise RuntimeError("callback bug")

    bad = engine.submit([20, 21, 22], params, on_delta=broken)
    good = engine.submit([20, 21, 22], params)
    assert good.result(timeout=60).token_ids == generate(model, [[20, 21, 22]], params)[0].token_ids
    assert bad.result(timeout=60).finish_reason == "length"
    assert engine.healthy
    engine.close()
    assert not engine.healthy
    assert "callback bug" in capsys.readouterr().err


def test_greedy_batched_equals_alone_with_moe_blocks():
    torch.manual_seed(0)
    moe = randomize(HybridLM(HybridConfig.from_name("hytron-tiny-moe", vocab_size=96)).eval())
    ps = prompts(5, seed=12)
    params = SamplingParams(max_tokens=8, temperature=0)
    alone = [generate(moe, [p], params)[0].token_ids for p in ps]
    assert [c.token_ids for c in generate(moe, ps, params, max_slots=3, prefill_chunk=9)] == alone


@pytest.mark.parametrize("prefix_cache", [0, 1 << 20])
def test_prompts_admitted_together_prefill_in_batched_forwards(model, prefix_cache):
    """A burst of requests prefills as batched forwards (rows of different lengths right-padded to the longest,
    each feeding its own prompt), with the tokens and log-probs of each request alone; a request that wants
    prompt log-probs prefills alone beside them. With the prefix cache (which keeps the state one token before
    each prompt's end), the prompts' last tokens are fed by the first decode step, not by forwards of their own."""
    ps = prompts(6, seed=5)
    assert len({len(p) for p in ps}) > 2
    params = [SamplingParams(max_tokens=6, temperature=0, logprobs=2) for _ in ps]
    params[2] = SamplingParams(max_tokens=6, temperature=0, logprobs=2, prompt_logprobs=1)
    alone = [generate(model, [p], sp)[0] for p, sp in zip(ps, params)]
    forwards = []  # (rows, width, real tokens per row)

    def seen(m, args, kwargs):
        b, n = args[0].shape
        fed = kwargs.get("fed")
        forwards.append((b, n, [n] * b if fed is None else fed.tolist()))

    hook = model.register_forward_pre_hook(seen, with_kwargs=True)
    try:
        together = generate(model, ps, params, max_slots=6, prefill_chunk=200, prefix_cache_bytes=prefix_cache)
    finally:
        hook.remove()
    # the model's forward runs prefill only (decode steps are the engine's static step)
    assert any(b >= 5 and len(set(fed)) > 1 for b, _, fed in forwards)  # rows of different lengths together
    # every prompt token fed once: with the prefix cache, the batchable prompts' last tokens by the first decode
    # step (which samples their first tokens with the other rows), the log-prob prompt whole by its own prefill
    deferred = 5 if prefix_cache else 0
    assert sum(sum(fed) for _, _, fed in forwards) == sum(len(p) for p in ps) - deferred
    assert len(forwards) <= 2 + (1 if prefix_cache else 0)  # the batchable five together, the log-prob one alone
    for a, t in zip(alone, together):
        assert t.token_ids == a.token_ids
        assert [lp.logprob for lp in t.logprobs] == pytest.approx([lp.logprob for lp in a.logprobs], abs=1e-5)
    assert [lp.logprob for lp in together[2].prompt_logprobs[1:]] == pytest.approx(
        [lp.logprob for lp in alone[2].prompt_logprobs[1:]], abs=1e-5)


def test_run_makes_the_calling_thread_the_engines_thread(model):
    """`Engine.run` (what `hytron serve` does in the thread that loaded the model): requests are served by the
    calling thread, `start` starts no second one, and `close` ends the loop."""
    engine = Engine(model, max_slots=2)
    threads, started = [], threading.Event()

    def main():
        threads.append(threading.current_thread())
        engine.run(started.set)

    runner = threading.Thread(target=main)
    runner.start()
    assert started.wait(10)
    with pytest.raises(RuntimeError, match="already runs"):
        engine.run()
    assert engine.start()._thread is runner
    req = engine.submit(prompts(1)[0], SamplingParams(max_tokens=5, temperature=0))
    assert len(req.result(timeout=60).token_ids) == 5
    engine.close()
    runner.join(10)
    assert not runner.is_alive() and threads == [runner]


def test_an_idle_engine_waits_for_a_burst_of_requests_to_arrive_and_prefills_them_together(model):
    """`burst_wait`: a client sends requests one after another (here 40 ms apart, inside the 0.5 s gap); the idle
    engine's thread, woken by the first, waits for the others and prefills all of them in one forward, instead
    of the first alone and the rest while it decodes. Once the slots are full it starts without waiting out the
    gap."""
    ps = prompts(4, seed=21)
    params = SamplingParams(max_tokens=4, temperature=0)
    want = [c.token_ids for c in generate(model, ps, params)]
    forwards = []
    hook = model.register_forward_pre_hook(lambda m, args: forwards.append(args[0].shape[0]))
    engine = Engine(model, max_slots=4, burst_wait=1.0, burst_gap=0.5).start()
    try:
        reqs = []
        for p in ps:
            reqs.append(engine.submit(p, params))
            time.sleep(0.04)
        started = time.monotonic()
        assert [r.result(timeout=60).token_ids for r in reqs] == want
        assert time.monotonic() - started < 0.45  # the slots were full: no wait for another request
        assert forwards[0] == len(ps)  # the first forward prefilled every prompt
    finally:
        hook.remove()
        engine.close()
    with pytest.raises(ValueError, match="burst_wait"):
        Engine(model, burst_wait=5)


def test_a_step_prefills_at_most_prefill_chunk_tokens_while_others_decode_and_more_when_none_does(model):
    """`prefill_chunk` bounds how long running requests wait for their next token: a step that decodes prefills
    at most that many prompt tokens. With nothing decoding nobody waits, and a step prefills up to
    IDLE_PREFILL_FACTOR times as many (a burst of prompts in fewer, larger forwards)."""
    from hytron.infer.engine import IDLE_PREFILL_FACTOR

    g = torch.Generator().manual_seed(3)
    ps = [torch.randint(1, model.config.vocab_size, (n,), generator=g).tolist() for n in (20, 20, 20, 40)]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    fed = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kw: fed.append(sum(kw["fed"].tolist()) if kw.get("fed") is not None else args[0].numel()),
        with_kwargs=True)
    try:
        engine = Engine(model, max_slots=4, prefill_chunk=16)
        reqs = [engine.submit(p, params) for p in ps[:3]]
        engine.step()  # idle: all three prompts (60 tokens <= 4 x 16) in this one step
        assert sum(fed) == 60 <= 16 * IDLE_PREFILL_FACTOR
        late = engine.submit(ps[3], params)
        for want_fed in (16, 16, 8):  # three requests decode: 16 prompt tokens of the late one per step
            fed.clear()
            engine.step()
            assert sum(fed) == want_fed
        engine.run_until_idle()
    finally:
        hook.remove()
    want = [c.token_ids for c in generate(model, ps, params)]
    assert [r.result().token_ids for r in reqs + [late]] == want
