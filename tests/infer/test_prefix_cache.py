"""Prefix caching for hybrid state: a restored prefix (attention KV + Mamba conv/SSM snapshots) gives the logits and
greedy tokens of a full prefill, for fully and partly shared prefixes, across chunk and block boundaries, batched,
under eviction, thinking budgets and speculation (the MTP head's cache rebuilt); prompt log-probs bypass it;
memory stays within its budget."""

import pytest
import torch

from hytron.infer import Engine, SamplingParams
from hytron.infer.prefix_cache import PrefixCache
from hytron.model import HybridConfig, HybridLM
from hytron.model.cache import KVState, MambaState
from tests.conftest import randomize
from tests.infer.chatmodel import tiny_chat_model
from tests.infer.test_budget import chat_prompt, engine_kwargs, tok  # noqa: F401 - tok is a fixture
from tests.infer.test_speculative import mtp_model

BLOCK = 8  # hytron-tiny scans in chunks of 16: blocks of 8 also cut through a scan chunk


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize(HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=96)).eval())


def rand_ids(n: int, seed: int) -> list[int]:
    return torch.randint(16, 96, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def prefill(model, ids: list[int], pc: PrefixCache | None = None, cache=None):
    """Feed `ids` into a batch-1 cache block by block, storing each block and the end in `pc` as the engine does;
    logits (L, V)."""
    cache = cache if cache is not None else model.new_cache(1, capacity=len(ids) + 16)
    out = []
    a = int(cache.lengths[0])
    while a < len(ids):
        b = min(len(ids), pc.next_boundary(a)) if pc is not None else len(ids)
        out.append(model(torch.tensor([ids[a:b]]), cache)[0])
        if pc is not None and (b % pc.block_size == 0 or b == len(ids)):
            pc.store(ids, cache)
        a = b
    return torch.cat(out), cache


@torch.no_grad()
def test_restored_prefix_continues_with_the_logits_of_a_full_forward(model):
    shared, pc = rand_ids(29, 0), PrefixCache(1 << 30, BLOCK)
    prefill(model, shared, pc)
    assert len(pc) == 4  # blocks end at 8, 16, 24; the prompt at 29
    for other in (shared + rand_ids(11, 1), shared[:20] + rand_ids(9, 2)):  # all of it shared, or part of a block
        hit = pc.lookup(other)
        n = hit.tokens
        assert n == (29 if other[:29] == shared else 16)
        cache = model.new_cache(1, capacity=len(other) + 16)
        pc.restore(hit, cache)
        rest, _ = prefill(model, other, cache=cache)
        full = model(torch.tensor([other]))[0]
        torch.testing.assert_close(rest, full[n:], rtol=0, atol=1e-5)
        # the test can fail: a Mamba state one block behind (the right KV) is not the state after n tokens
        wrong = model.new_cache(1, capacity=len(other) + 16)
        pc.restore(hit, wrong)
        for layer, state in zip(wrong.layers, hit.entries[-2].state):
            if state is not None:
                layer.conv[0], layer.ssm[0] = state
        bad = model(torch.tensor([other[n:]]), wrong)[0]
        assert (bad - full[n:]).abs().max() > 1e-2


def test_lookup_never_covers_the_last_token_and_follows_the_chain(model):
    ids, pc = rand_ids(24, 3), PrefixCache(1 << 30, BLOCK)
    prefill(model, ids, pc)
    assert len(pc) == 3
    assert pc.lookup(ids).tokens == 16  # a block-aligned prompt: its last block is left to prefill
    assert pc.lookup(ids + [20]).tokens == 24
    assert pc.lookup([ids[0] + 1] + ids[1:] + [20]).tokens == 0  # a different first token: a different chain
    assert pc.lookup(ids[:8] + [ids[8] + 1] + ids[9:] + [20]).tokens == 8
    assert pc.stats["queries"] == 4 and pc.stats["hits"] == 3 and pc.stats["hit_tokens"] == 48


def test_memory_stays_within_the_budget_evicting_least_recently_used_tails(model):
    a, b = rand_ids(32, 4), rand_ids(32, 5)  # 4 blocks each, no end entries
    one = PrefixCache(1 << 30, BLOCK)
    prefill(model, a, one)
    size = one.bytes // 4
    pc = PrefixCache(6 * size, BLOCK)  # room for 6 of the 8 blocks of a and b
    prefill(model, a, pc)
    prefill(model, b, pc)
    assert pc.bytes <= pc.max_bytes and len(pc) == 6 and pc.stats["evictions"] == 2
    assert pc.lookup(a + [1]).tokens == 16  # a's tail went first, its head stayed
    assert pc.lookup(b + [1]).tokens == 32
    assert PrefixCache(size - 1, BLOCK).bytes == 0
    small = PrefixCache(size - 1, BLOCK)
    prefill(model, a, small)
    assert len(small) == 0 and small.bytes == 0  # a block larger than the budget is never kept


def cache_tensors(state, n: int) -> list:
    """Row 0 of a layer's state: its KV at the first n positions, or its Mamba conv window and SSM state."""
    if isinstance(state, KVState):
        return [state.k[0, :, :n], state.v[0, :, :n]]
    return [state.conv[0], state.ssm[0]] if isinstance(state, MambaState) else []


def run(engine: Engine, prompts, params) -> list:
    """Submit each prompt (one by one, so later ones can hit what earlier ones stored) and return the results."""
    return [_result(engine, p, sp) for p, sp in zip(prompts, params)]


def _result(engine, p, sp):
    req = engine.submit(p, sp)
    engine.run_until_idle()
    return req.result()


def same_outputs(got, want, atol=1e-5):  # measured: 5e-7; a state left unrestored: 8e-4
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    for g, w in zip(got, want):
        assert len(g.logprobs) == len(w.logprobs)
        for x, y in zip(g.logprobs, w.logprobs):
            assert x.token_id == y.token_id and abs(x.logprob - y.logprob) < atol
            assert [i for i, _ in x.top] == [i for i, _ in y.top]
            assert max(abs(p - q) for (_, p), (_, q) in zip(x.top, y.top)) < atol


def conversation(shared_len=45, seed=6):
    """Prompts as a chat's turns and agents' calls make them: one shared start, suffixes that branch off inside
    blocks and at block ends, a later turn extending an earlier prompt, a repeat."""
    shared = rand_ids(shared_len, seed)
    first = shared + rand_ids(7, seed + 1)
    return [first, shared + rand_ids(12, seed + 2), shared[:19] + rand_ids(30, seed + 3),
            first + rand_ids(20, seed + 4), first, shared[:40]]


@pytest.mark.parametrize("prefill_chunk", [512, 13])
def test_engine_with_the_cache_gives_the_tokens_and_logits_of_the_engine_without(model, prefill_chunk):
    ps = conversation()
    params = [SamplingParams(max_tokens=10, temperature=0, logprobs=5)] * len(ps)
    want = run(Engine(model, prefill_chunk=prefill_chunk), ps, params)
    engine = Engine(model, prefill_chunk=prefill_chunk, prefix_cache_bytes=1 << 30, prefix_block_size=BLOCK)
    got = run(engine, ps, params)
    same_outputs(got, want)
    # what each reused: nothing, then the shared 40 (of 45: whole blocks), 16 (19 shared), the first prompt but its
    # last token (51 of 52: the state is kept one token before each prompt's end), the same 51 of the first sent
    # again (its last token is always prefilled, for its logits), 32 of the 40 (a block-aligned prompt leaves its
    # last block)
    assert [r.cached_tokens for r in got] == [0, 40, 16, 51, 51, 32]
    assert [r.cached_tokens for r in want] == [0] * 6
    stats = engine.prefix_cache.stats
    assert stats["queries"] == 6 and stats["hits"] == 5 and stats["hit_tokens"] == 190
    assert stats["queried_tokens"] == sum(map(len, ps))
    assert engine.stats["prompt_tokens"] == sum(map(len, ps)) - 190  # only the rest is prefilled
    # a chat's next turn: the first conversation so far (prompt + answer) and a new message; it resumes where the
    # first request stopped (its last token was sampled, never fed)
    turn = ps[0] + want[0].token_ids + rand_ids(9, 60)
    [again], [plain] = run(engine, [turn], params[:1]), run(Engine(model), [turn], params[:1])
    same_outputs([again], [plain])
    assert again.cached_tokens == len(ps[0]) + len(want[0].token_ids) - 1


def test_batched_requests_and_eviction_keep_the_outputs(model):
    ps = conversation(seed=20) + conversation(shared_len=37, seed=30)
    params = [SamplingParams(max_tokens=8, temperature=0, logprobs=3)] * len(ps)
    want = run(Engine(model), ps, params)
    pc_one = PrefixCache(1 << 30, BLOCK)
    prefill(model, ps[0][:BLOCK], pc_one)
    engine = Engine(model, max_slots=4, prefill_chunk=11, prefix_cache_bytes=5 * pc_one.bytes,
                    prefix_block_size=BLOCK)
    reqs = [engine.submit(p, sp) for p, sp in zip(ps, params)]  # all at once: prefilled while others decode
    engine.run_until_idle()
    got = [r.result() for r in reqs]
    same_outputs(got, want)
    pc = engine.prefix_cache
    assert pc.stats["evictions"] > 0 and pc.bytes <= pc.max_bytes
    assert pc.stats["hits"] > 0 and any(r.cached_tokens for r in got)
    # seeded sampling draws the same tokens from a restored prefix
    hot = [SamplingParams(max_tokens=8, temperature=1.0, seed=i) for i in range(len(ps))]
    assert [r.token_ids for r in run(engine, ps, hot)] == [r.token_ids for r in run(Engine(model), ps, hot)]


def test_thinking_turns_under_a_budget_are_unchanged(tok):  # noqa: F811 - tok is a fixture
    m = tiny_chat_model(tok, 2)
    kw = engine_kwargs(tok)
    system = "You are a careful assistant. Answer briefly, and think before you answer. " * 3
    turns = [[{"role": "system", "content": system}, {"role": "user", "content": q}]
             for q in ("What is 2+2?", "Name a river.", "What is 2+2? And 3+3?")]
    ps = [tok.apply_chat_template(t, add_generation_prompt=True) for t in turns]
    assert len(ps[0]) > 3 * BLOCK
    params = [SamplingParams(max_tokens=30, temperature=0, thinking=True, max_thinking_tokens=b, logprobs=2)
              for b in (4, 9, 0)]
    want = run(Engine(m, **kw), ps, params)
    got = run(Engine(m, prefix_cache_bytes=1 << 30, prefix_block_size=BLOCK, **kw), ps, params)
    same_outputs(got, want)
    assert [(r.reasoning, r.text, r.thinking_forced) for r in got] == \
        [(r.reasoning, r.text, r.thinking_forced) for r in want]
    assert all(r.cached_tokens >= BLOCK for r in got[1:])


def test_prompt_logprobs_bypass_the_lookup_and_still_match(model):
    ps = conversation(seed=40)[:2]
    params = [SamplingParams(max_tokens=4, temperature=0, prompt_logprobs=2)] * 2
    want = run(Engine(model), ps, params)
    engine = Engine(model, prefix_cache_bytes=1 << 30, prefix_block_size=BLOCK)
    got = run(engine, ps, params)
    assert [r.cached_tokens for r in got] == [0, 0] and engine.prefix_cache.stats["queries"] == 0
    for g, w in zip(got, want):
        assert g.token_ids == w.token_ids and len(g.prompt_logprobs) == len(w.prompt_logprobs)
        assert all(abs(x.logprob - y.logprob) < 1e-5 for x, y in zip(g.prompt_logprobs, w.prompt_logprobs))
    assert len(engine.prefix_cache) > 0  # what they prefilled is still stored for others


@pytest.mark.parametrize("mtp_pattern", ["M*-", "*-"])
def test_speculation_restores_the_mtp_heads_cache_too(mtp_pattern):
    m = mtp_model(mtp_pattern=mtp_pattern)
    ps = conversation(seed=50)
    params = [SamplingParams(max_tokens=10, temperature=0, logprobs=3)] * len(ps)
    want = run(Engine(m, speculative_tokens=2), ps, params)
    engine = Engine(m, speculative_tokens=2, prefix_cache_bytes=1 << 30, prefix_block_size=BLOCK)
    got = run(engine, ps, params)
    same_outputs(got, want)
    assert [r.cached_tokens for r in got] == [0, 40, 16, 51, 51, 32]
    # the head drafts from the same state: the same drafts accepted (a random head: its state decides them)
    assert [(r.drafts, r.accepted_tokens) for r in got] == [(r.drafts, r.accepted_tokens) for r in want]
    assert sum(r.accepted_tokens for r in got) > 0
    # the state after the prefill of a prompt that reused 40 tokens is the state of a full prefill: both the
    # model's cache and the MTP head's (rebuilt from the block's hidden states)
    states = []
    for e in (Engine(m, speculative_tokens=2), engine):
        e.submit(ps[1], SamplingParams(max_tokens=5, temperature=0))
        e.step()  # prefilled, first token sampled, joined the batch: nothing decoded yet
        states.append((e._cache, e._mtp_cache))
        e.run_until_idle()
    for full, restored in zip(*states):
        assert int(full.lengths[0]) == int(restored.lengths[0]) > 40
        n = int(full.lengths[0])
        for a, b in zip(full.layers, restored.layers):
            for x, y in zip(cache_tensors(a, n), cache_tensors(b, n)):
                torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    # and the same greedy tokens as plain decoding with the cache
    plain = run(Engine(m, prefix_cache_bytes=1 << 30, prefix_block_size=BLOCK), ps, params)
    assert [r.token_ids for r in plain] == [r.token_ids for r in got]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="block_size"):
        PrefixCache(1 << 20, 0)
    m = randomize(HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=96)).eval())
    c = m.new_cache(1)
    m(torch.tensor([[1, 2, 3]]), c)
    with pytest.raises(ValueError, match="its ids"):
        PrefixCache(1 << 20, BLOCK).store([1, 2], c)
    with pytest.raises(ValueError, match="hidden states for 2 positions"):
        PrefixCache(1 << 20, BLOCK).store([1, 2, 3], c, hidden=torch.zeros(2, m.config.hidden_size))
