"""Speculative decoding with the MTP head: greedy tokens identical to plain decoding (Mamba state rolled back on
rejection, a poor head and an accurate one), sampling keeps the model's distribution (chi-square), thinking
budgets, stop strings and batching unchanged, acceptance counted, bad settings refused."""

import dataclasses

import pytest
import torch

from hytron.infer import Engine, SamplingParams, generate
from hytron.infer.sampling import filter_logits
from hytron.infer.speculative import MTPDrafter
from hytron.model import HybridConfig, HybridLM
from tests.conftest import randomize
from tests.infer.chatmodel import tiny_chat_model, train_tokenizer
from tests.infer.test_budget import biased, chat_prompt, engine_kwargs


def mtp_model(vocab: int = 96, mtp_pattern: str = "M*-", seed: int = 0) -> HybridLM:
    """hytron-tiny (Mamba, attention and MLP blocks) with a random MTP head holding Mamba and attention too."""
    torch.manual_seed(seed)
    cfg = HybridConfig.from_name("hytron-tiny", vocab_size=vocab, num_nextn_predict_layers=1, mtp_pattern=mtp_pattern)
    return randomize(HybridLM(cfg).eval(), seed)


@torch.no_grad()
def make_head_accurate(model: HybridLM, mixing: float = 0.02) -> HybridLM:
    """Make drafts mostly right: the main model's mixers are scaled by `mixing`, so its next token is mostly a
    function of the current token (f(x) = argmax head(norm_f(embed(x)))) and otherwise of the history (its Mamba
    and attention state); the MTP head computes exactly f of the token it is given (eh_proj passes the embedding,
    its blocks add nothing, final_layernorm = norm_f), i.e. the main model without its mixers."""
    for block in model.backbone.layers:
        for name in ("out_proj", "o_proj", "down_proj"):
            if hasattr(block.mixer, name):
                getattr(block.mixer, name).weight.mul_(mixing)
    d = model.config.hidden_size
    first, last = model.mtp.layers[0], model.mtp.layers[-1]
    first.eh_proj.weight.zero_()
    first.eh_proj.weight[:, :d] = torch.eye(d)
    first.enorm.weight.fill_(1.0)
    last.final_layernorm.weight.copy_(model.backbone.norm_f.weight)
    for block in model.mtp.layers:
        for name in ("out_proj", "o_proj", "down_proj"):
            if hasattr(block.mixer, name):
                getattr(block.mixer, name).weight.zero_()
    return model


def prompts(n: int, vocab: int = 96, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(16, vocab, (int(torch.randint(1, 30, (), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def acceptance(results) -> float:
    return sum(r.accepted_tokens for r in results) / sum(r.draft_tokens for r in results)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_is_plain_decoding_with_a_poor_head_batched_and_chunked(k):
    model, ps = mtp_model(), prompts(6)
    params = SamplingParams(max_tokens=24, temperature=0)
    plain = generate(model, ps, params, max_slots=3, prefill_chunk=7)
    spec = generate(model, ps, params, max_slots=3, prefill_chunk=7, speculative_tokens=k)
    assert [r.token_ids for r in spec] == [r.token_ids for r in plain]
    assert all(len(r.token_ids) == 24 for r in spec)
    assert acceptance(spec) < 0.3  # a random head: nearly every draft is rejected and the state rolled back
    assert all(r.drafts > 0 and r.draft_tokens == k * r.drafts for r in spec)


@pytest.mark.parametrize("k", [2, 4])
def test_greedy_is_plain_decoding_with_an_accurate_head(k):
    model, ps = make_head_accurate(mtp_model()), prompts(6, seed=2)
    params = SamplingParams(max_tokens=40, temperature=0)
    plain = generate(model, ps, params, max_slots=4)
    spec = generate(model, ps, params, max_slots=4, speculative_tokens=k)
    assert [r.token_ids for r in spec] == [r.token_ids for r in plain]
    rate = acceptance(spec)
    assert 0.5 < rate < 1.0  # mostly accepted, with rejections where the history changes the main model's choice
    for r in spec:
        assert r.mean_accepted_length == pytest.approx(1 + r.accepted_tokens / r.drafts)
        # every decoded token came from a verify step: the first came from the prefill
        assert r.drafts + r.accepted_tokens >= len(r.token_ids) - 1
    assert sum(r.mean_accepted_length for r in spec) / len(spec) > 1 + 0.5 * k


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_greedy_is_plain_decoding_in_every_decode_mode(mode):
    """"eager" runs the model's cached forward and the drafter, "static" the static verify and draft steps (the
    default, as in the tests above); a sampled row in the batch drafts through the drafter on the same caches."""
    model, ps = make_head_accurate(mtp_model()), prompts(4, seed=4)
    greedy = SamplingParams(max_tokens=30, temperature=0)
    sampled = SamplingParams(max_tokens=30, temperature=0.8, seed=1)
    plain = generate(model, ps, [greedy, greedy, sampled, greedy], max_slots=4, decode_mode="eager")
    spec = generate(model, ps, [greedy, greedy, sampled, greedy], max_slots=4, speculative_tokens=3,
                    decode_mode=mode)
    assert [r.token_ids for i, r in enumerate(spec) if i != 2] == [r.token_ids for i, r in enumerate(plain) if i != 2]
    assert acceptance(spec) > 0.5


def test_compiled_speculation_is_plain_decoding_and_compiles_once(monkeypatch):
    """decode_mode "compile": batch-1 verify and draft steps compiled (once per process; two requests of different
    lengths share it), the same greedy tokens; a backend that cannot compile them warns and runs them uncompiled."""
    from hytron.infer.speculative import StaticSpeculation
    from hytron.model import spec_step
    from hytron.model.kernels import _compiled_graphs

    model = make_head_accurate(mtp_model())
    g = torch.Generator().manual_seed(5)
    ps = [torch.randint(16, 96, (n,), generator=g).tolist() for n in (5, 70)]  # KV capacities 64 and 128
    params = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    want = [r.token_ids for r in generate(model, ps, params, decode_mode="eager")]
    engine = Engine(model, max_slots=1, speculative_tokens=3, decode_mode="compile")
    assert engine.warmup() > 0
    graphs = _compiled_graphs()
    reqs = [engine.submit(p, params) for p in ps]
    engine.run_until_idle()
    assert [r.result().token_ids for r in reqs] == want
    assert engine.stats["spec_accepted_tokens"] > 0
    assert _compiled_graphs() == graphs  # the capacity is a dynamic dimension: nothing compiled after the warm-up

    def broken(name):
        def step(*a, **kw):
            raise RuntimeError("no C++ compiler here")
        return step

    monkeypatch.setattr(spec_step, "compiled", broken)
    monkeypatch.setattr(StaticSpeculation, "compile_failed", None)
    engine = Engine(model, max_slots=1, speculative_tokens=3, decode_mode="compile")
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler here"):
        got = [engine.submit(p, params) for p in ps]
        engine.run_until_idle()
    assert [r.result().token_ids for r in got] == want
    assert StaticSpeculation.compile_failed is not None


def test_greedy_would_differ_without_the_mamba_rollback(monkeypatch):
    """The identity above depends on restoring the Mamba state: keeping the state after all K+1 verified tokens
    (attention truncated alone) changes the output."""
    from hytron.model.cache import HybridCache

    model, ps = mtp_model(), prompts(3, seed=3)
    params = SamplingParams(max_tokens=16, temperature=0)
    plain = generate(model, ps, params)
    original = HybridCache.rollback

    def attention_only(self, keep):
        for s in self.layers:
            if getattr(s, "ssm_steps", None) is not None:
                s.track, s.conv_steps, s.ssm_steps = False, None, None  # Mamba keeps its state after every token
        self.lengths -= self.last_fed - keep.to(self.lengths.device)

    monkeypatch.setattr(HybridCache, "rollback", attention_only)
    broken = generate(model, ps, params, speculative_tokens=3)
    monkeypatch.setattr(HybridCache, "rollback", original)
    assert [r.token_ids for r in broken] != [r.token_ids for r in plain]


def test_the_drafter_cache_equals_the_head_over_the_whole_sequence():
    """Catch-up widths differ per row (padding rolled back) and draft steps are undone: after each round the
    head's depth-1 prediction equals `mtp_logits` computed over the whole sequence without a cache."""
    model = mtp_model(mtp_pattern="M*")
    seqs = [torch.randint(0, 96, (30,)).tolist() for _ in range(2)]
    ids = torch.tensor(seqs)
    with torch.no_grad():
        hidden = model(ids, return_hidden=True)
        want = torch.softmax(model.mtp_logits(ids, hidden, 1)[0].float(), -1)  # (2, 29, V): predicts t+2
        drafter = MTPDrafter(model, 3)
        cache = model.new_mtp_cache(2, capacity=8)
        seen = [0, 0]
        params = [SamplingParams(temperature=1.0, seed=0)] * 2
        for widths in ([5, 2], [1, 4], [3, 3], [2, 1], [6, 1]):
            ends = [s + w for s, w in zip(seen, widths)]
            pending = [hidden[r, seen[r]:ends[r]] for r in range(2)]
            tails = [seqs[r][seen[r] + 1:ends[r] + 1] for r in range(2)]
            gens = [torch.Generator().manual_seed(0) for _ in range(2)]
            _, qs = drafter.draft(cache, pending, tails, params, gens, [(), ()])
            for r in range(2):
                torch.testing.assert_close(qs[r][0], want[r, ends[r] - 1], atol=1e-5, rtol=1e-4)
            assert cache.lengths.tolist() == ends
            seen = ends


def chi_square_p_value(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's chi-square test (cells expecting < 5 pooled): the p-value."""
    big = expected >= 5
    obs = torch.cat([observed[big], observed[~big].sum()[None]]).double()
    exp = torch.cat([expected[big], expected[~big].sum()[None]]).double()
    stat = ((obs - exp) ** 2 / exp.clamp(min=1e-9)).sum()
    df = torch.tensor(int(big.sum()) / 2.0, dtype=torch.float64)  # (cells - 1) / 2, the pooled cell included
    return float(torch.special.gammaincc(df, stat / 2))


def sampled_tokens_fit_the_model(model, prompt, params, results) -> float:
    """Every generated token is a draw from the model's conditional p(. | prompt, tokens before it) (after
    temperature and filters). Count the draws in cells (previous token, token) and compare with the sum of the
    draws' conditional probabilities of each cell (the draws are independent given their prefixes; the cells
    keep apart contexts whose distributions differ). Returns the chi-square p-value."""
    seqs = torch.tensor([prompt + r.token_ids for r in results])  # (n, P + T)
    with torch.no_grad():
        logits = model(seqs)[:, len(prompt) - 1:-1].float()  # (n, T, V): position j predicts token j
    V = logits.size(-1)
    probs = torch.softmax(torch.stack([filter_logits(row, params) for row in logits.flatten(0, 1)]), -1)  # (n*T, V)
    prev = seqs[:, len(prompt) - 1:-1].flatten()  # (n*T,) the token before each draw
    token = seqs[:, len(prompt):].flatten()
    observed = torch.bincount(prev * V + token, minlength=V * V)
    expected = torch.zeros(V, V, dtype=torch.float64).index_add_(0, prev, probs.double()).flatten()
    return chi_square_p_value(observed, expected)


def test_sampling_keeps_the_model_distribution():
    """300 seeded requests of 24 tokens each through K=3 drafts (about 70% accepted, the rest drawn from the
    residual): the tokens fit the model's own conditionals (chi-square), as plain sampling's do."""
    vocab, n = 12, 300
    model = make_head_accurate(mtp_model(vocab=vocab, mtp_pattern="*-", seed=4), mixing=0.05)
    with torch.no_grad():
        model.lm_head.weight.mul_(4)  # distributions peaked enough that the head is often right, and often not
    prompt, params = [3, 5, 7, 1], SamplingParams(max_tokens=24, temperature=0.9, top_k=8)
    seeded = [dataclasses.replace(params, seed=i) for i in range(n)]
    spec = generate(model, [prompt] * n, seeded, max_slots=n, speculative_tokens=3)
    assert 0.5 < acceptance(spec) < 0.9  # both accepted drafts and residual draws happen, often
    assert sampled_tokens_fit_the_model(model, prompt, params, spec) > 1e-3
    plain = generate(model, [prompt] * n, seeded, max_slots=n)
    assert sampled_tokens_fit_the_model(model, prompt, params, plain) > 1e-3


def test_the_distribution_test_sees_a_subtly_wrong_sampler(monkeypatch):
    """The test above has power: a sampler that keeps drafts with the right probability but, on rejection, draws
    from p instead of the residual max(0, p - q) is caught."""
    import hytron.infer.engine as engine_module
    from hytron.infer import sampling

    def wrong(logits, params, generator, draft, q, banned=(), history=None):
        p = torch.softmax(filter_logits(sampling.adjust_logits(logits, params, banned, history), params), -1)
        if torch.rand((), generator=generator) * q[draft] < p[draft]:
            return draft
        return sampling.sample(logits, params, generator, banned, history)

    vocab, n = 12, 300
    model = make_head_accurate(mtp_model(vocab=vocab, mtp_pattern="*-", seed=4), mixing=0.05)
    with torch.no_grad():
        model.lm_head.weight.mul_(4)
    prompt, params = [3, 5, 7, 1], SamplingParams(max_tokens=24, temperature=0.9, top_k=8)
    monkeypatch.setattr(engine_module, "verify_draft", wrong)
    got = generate(model, [prompt] * n, [dataclasses.replace(params, seed=i) for i in range(n)], max_slots=n,
                   speculative_tokens=3)
    assert sampled_tokens_fit_the_model(model, prompt, params, got) < 1e-6


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def chat_mtp_model(tok, seed: int = 0) -> HybridLM:
    model = tiny_chat_model(tok, seed, num_nextn_predict_layers=1, mtp_pattern="*-")
    return make_head_accurate(randomize(model, seed))


@pytest.mark.parametrize("budget", [0, 4, 11])
def test_thinking_budget_is_the_same_under_speculation(tok, budget):
    # a model that never closes its thinking by itself: the budget forces </think> (a token no draft proposes)
    model = biased(chat_mtp_model(tok), {i: -1e4 for i in (tok.think_end_id, *tok.stop_ids)})
    kw = engine_kwargs(tok)
    ps = [chat_prompt(tok, t) for t in ("What is 6 times 7? /think", "Tell me about the river Alder. /think")]
    params = [SamplingParams(max_tokens=40, temperature=0, thinking=True, max_thinking_tokens=budget)] * 2
    plain = generate(model, ps, params, max_slots=2, **kw)
    spec = generate(model, ps, params, max_slots=2, speculative_tokens=3, **kw)
    for a, b in zip(plain, spec):
        assert b.token_ids == a.token_ids and tok.think_end_id in b.token_ids
        assert (b.reasoning, b.text, b.reasoning_tokens, b.thinking_forced) == \
            (a.reasoning, a.text, a.reasoning_tokens, a.thinking_forced)
    assert acceptance(spec) > 0.3


def test_thinking_budget_under_compiled_speculation(tok):
    """Batch 1, decode_mode "compile": the draft step's ban bias appears when the thinking ends (a second variant
    of the compiled step); the tokens stay plain decoding's."""
    model = biased(chat_mtp_model(tok), {i: -1e4 for i in (tok.think_end_id, *tok.stop_ids)})
    kw = engine_kwargs(tok)
    ps = [chat_prompt(tok, "What is 6 times 7? /think")]
    params = SamplingParams(max_tokens=40, temperature=0, thinking=True, max_thinking_tokens=6)
    [plain] = generate(model, ps, params, max_slots=1, **kw)
    [spec] = generate(model, ps, params, max_slots=1, speculative_tokens=3, decode_mode="compile", **kw)
    assert spec.token_ids == plain.token_ids and tok.think_end_id in spec.token_ids
    assert (spec.reasoning, spec.text, spec.thinking_forced) == (plain.reasoning, plain.text, plain.thinking_forced)
    assert spec.accepted_tokens > 0


def test_stop_strings_and_streaming_are_the_same_under_speculation(tok):
    model = chat_mtp_model(tok, 1)
    kw = engine_kwargs(tok)
    prompt = chat_prompt(tok, "Hello there /no_think")
    free = generate(model, [prompt], SamplingParams(max_tokens=30, temperature=0, thinking=False), **kw)[0]
    stop = free.text[len(free.text) // 2:][:3]  # a string the answer reaches mid-way
    assert stop
    params = SamplingParams(max_tokens=30, temperature=0, thinking=False, stop=(stop,))
    [plain] = generate(model, [prompt], params, **kw)
    engine = Engine(model, speculative_tokens=4, **kw)
    req = engine.submit(prompt, params)
    engine.run_until_idle()
    deltas = list(req)
    spec = req.result()
    assert plain.finish_reason == "stop" and plain.stop_reason == stop
    assert (spec.token_ids, spec.text, spec.finish_reason, spec.stop_reason) == \
        (plain.token_ids, plain.text, plain.finish_reason, plain.stop_reason)
    assert "".join(d.text for d in deltas) == spec.text
    assert sum(len(d.token_ids) for d in deltas) == len(spec.token_ids)
    assert engine.stats["spec_drafts"] == spec.drafts > 0
    assert engine.stats["spec_accepted_tokens"] == spec.accepted_tokens > 0


def test_bad_speculation_settings_are_refused():
    plain = randomize(HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=96)).eval())
    with pytest.raises(ValueError, match="needs a model with an MTP head"):
        Engine(plain, speculative_tokens=2)
    with pytest.raises(ValueError, match="integer >= 1"):
        Engine(mtp_model(), speculative_tokens=-1)
    two = HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=96, num_nextn_predict_layers=2,
                                          mtp_pattern="*"))
    with pytest.raises(ValueError, match="one MTP module"):
        Engine(two, speculative_tokens=2)
