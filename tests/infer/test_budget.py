"""Thinking budget: never exceeded beyond the grace window, ends at a newline, /no_think never thinks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hytron.infer import Engine, SamplingParams, ThinkingBudget, generate, newline_ids
from hytron.infer.budget import newline_ids as newline_ids_fn
from hytron.model import HybridConfig, HybridLM
from tests.conftest import randomize
from tests.infer.chatmodel import tiny_chat_model, train_tokenizer

END, NL = 6, 10


def run_budget(stream, budget, grace):
    """Feed a model's free token stream through the budget; return what was actually generated."""
    b = ThinkingBudget(END, [NL], budget, grace=grace)
    out = []
    it = iter(stream)
    while b.thinking:
        forced = b.forced()
        tok = forced if forced is not None else next(it)
        b.observe(tok, forced=forced is not None)
        out.append(tok)
    return out, b


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([11, 12, NL]), min_size=400, max_size=400), st.integers(0, 40), st.integers(0, 10))
def test_budget_is_never_exceeded_beyond_the_grace_window(stream, budget, grace):
    out, b = run_budget(stream, budget, grace)
    thinking = out[:-1]
    assert out[-1] == END and END not in thinking
    assert len(thinking) <= budget + grace
    assert len(thinking) == b.thinking_tokens and b.forced_end
    if budget == 0:
        assert thinking == []
    else:
        assert len(thinking) >= budget
        # ends right after the first newline at or after the budget, if one came within the window
        after = [i for i, t in enumerate(thinking) if t == NL and i + 1 >= budget]
        if after:
            assert len(thinking) == after[0] + 1
        else:
            assert len(thinking) == budget + grace


def test_the_model_may_close_its_thinking_early():
    out, b = run_budget([11, 12, END, 11], budget=10, grace=2)
    assert out == [11, 12, END] and not b.forced_end and b.thinking_tokens == 2


def test_newline_ids_from_a_vocabulary():
    assert newline_ids_fn({"a": 1, "b\n": 2, "\n\n": 3}) == {2, 3}
    assert newline_ids([(4, "x"), (5, "y\nz")]) == {5}


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def chat_prompt(tok, text, **kw):
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, **kw)


def engine_kwargs(tok):
    vocab = [(i, tok.decode([i])) for i in range(tok.vocab_size)]
    return dict(stop_ids=tok.stop_ids, decode=lambda ids: tok.decode(ids, skip_special=True),
                think_start_id=tok.think_start_id, think_end_id=tok.think_end_id, newline_ids=newline_ids(vocab))


def biased(model, bias: dict[int, float]):
    """Give the LM head a bias on some ids (the model stays real; its preferences change)."""
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        for i, b in bias.items():
            head.bias[i] = b
    model.lm_head = head
    return model


def never_stops(tok, seed=0):
    """A random model that never closes its thinking nor ends its turn by itself."""
    return biased(tiny_chat_model(tok, seed), {i: -1e4 for i in (tok.think_end_id, *tok.stop_ids)})


@pytest.mark.parametrize("budget", [0, 5, 17])
def test_engine_caps_thinking_then_answers(tok, budget):
    m = never_stops(tok)
    kw = engine_kwargs(tok)
    prompt = chat_prompt(tok, "What is 6 times 7? /think")
    assert prompt[-2:] == [tok.think_start_id] + tok.encode("\n")
    results = generate(m, [prompt] * 4, [SamplingParams(max_tokens=60, temperature=1.0, seed=s, thinking=True,
                                                        max_thinking_tokens=budget) for s in range(4)], **kw)
    grace = SamplingParams(max_thinking_tokens=budget).grace()
    for r in results:
        assert tok.think_end_id in r.token_ids and r.thinking_forced
        cut = r.token_ids.index(tok.think_end_id)
        assert budget <= cut <= budget + grace
        assert r.reasoning_tokens == cut + 1
        assert r.reasoning == tok.decode(r.token_ids[:cut], skip_special=True)
        assert r.text == tok.decode(r.token_ids[cut + 1:], skip_special=True)
        assert len(r.token_ids) == 60 and r.finish_reason == "length"  # the answer goes on after </think>
        assert tok.think_start_id not in r.token_ids[cut:] and r.token_ids.count(tok.think_end_id) == 1
        if 0 < cut < budget + grace:  # ended early: at a newline reached after the budget
            assert "\n" in tok.decode([r.token_ids[cut - 1]])


def test_no_think_yields_empty_thinking_even_if_the_model_wants_to_think(tok):
    # make <think> and </think> the model's favourite tokens
    m = biased(tiny_chat_model(tok, 1), {tok.think_start_id: 50.0, tok.think_end_id: 40.0})
    prompt = chat_prompt(tok, "Hello /no_think")
    assert prompt[-2:] == [tok.think_start_id, tok.think_end_id]
    free = generate(m, [prompt], SamplingParams(max_tokens=8, temperature=0))[0]
    assert tok.think_start_id in free.token_ids  # raw generation would open a thinking section
    r = generate(m, [prompt], SamplingParams(max_tokens=8, temperature=0, thinking=False), **engine_kwargs(tok))[0]
    assert r.reasoning == "" and r.reasoning_tokens == 0
    assert not {tok.think_start_id, tok.think_end_id} & set(r.token_ids)


def test_budgeted_request_batched_equals_alone(tok):
    m = randomize(HybridLM(HybridConfig.from_name("hytron-tiny", vocab_size=tok.vocab_size)).eval())
    kw = engine_kwargs(tok)
    ps = [chat_prompt(tok, t) for t in ("Hi", "What is 2+2?", "Tell me about the river Alder.")]
    params = [SamplingParams(max_tokens=24, temperature=0, thinking=True, max_thinking_tokens=b) for b in (3, 8, 0)]
    alone = [generate(m, [p], sp, **kw)[0] for p, sp in zip(ps, params)]
    batched = generate(m, ps, params, max_slots=2, **kw)
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    assert [(r.reasoning, r.text) for r in batched] == [(r.reasoning, r.text) for r in alone]


def test_streamed_reasoning_and_answer_deltas(tok):
    m = never_stops(tok, 2)
    engine = Engine(m, **engine_kwargs(tok))
    req = engine.submit(chat_prompt(tok, "Go"), SamplingParams(max_tokens=20, temperature=0, thinking=True,
                                                               max_thinking_tokens=6, thinking_grace=0))
    engine.run_until_idle()
    deltas = list(req)
    r = req.result()
    assert "".join(d.reasoning for d in deltas) == r.reasoning
    assert "".join(d.text for d in deltas) == r.text
    first_answer = next(i for i, d in enumerate(deltas) if tok.think_end_id in d.token_ids)
    assert all(d.text == "" for d in deltas[: first_answer + 1])
    assert all(d.reasoning == "" for d in deltas[first_answer + 1:])
    assert r.token_ids.index(tok.think_end_id) == 6


def test_stop_strings_apply_to_the_answer_not_the_thinking(tok):
    m = never_stops(tok, 3)
    kw = engine_kwargs(tok)
    prompt = chat_prompt(tok, "Think first.")
    params = dict(max_tokens=30, temperature=0, thinking=True, max_thinking_tokens=8, thinking_grace=0)
    free = generate(m, [prompt], SamplingParams(**params), **kw)[0]
    assert len(free.reasoning) > 4 and len(free.text) > 4
    inside = free.reasoning[1:4]
    if inside not in free.text:  # a stop string seen only in the thinking never stops generation
        same = generate(m, [prompt], SamplingParams(**params, stop=[inside]), **kw)[0]
        assert same.token_ids == free.token_ids and same.finish_reason == "length"
    answer_stop = free.text[2:4]
    cut = generate(m, [prompt], SamplingParams(**params, stop=[answer_stop]), **kw)[0]
    assert cut.reasoning == free.reasoning and cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(answer_stop)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([11, 12, NL]), min_size=400, max_size=400), st.integers(0, 40), st.integers(0, 10))
def test_a_cut_line_is_ended_with_the_newline_token_before_the_end_of_thinking(stream, budget, grace):
    b = ThinkingBudget(END, [NL], budget, grace=grace, line_end_id=NL)
    out, it = [], iter(stream)
    while b.thinking:
        forced = b.forced()
        tok = forced if forced is not None else next(it)
        b.observe(tok, forced=forced is not None)
        out.append(tok)
    thinking = out[:-1]
    assert out[-1] == END and len(thinking) <= budget + grace + 1
    assert budget == 0 and thinking == [] or thinking[-1] == NL  # the trace always ends on a line break


def test_serve_eval_and_rollouts_decode_the_same_tokens_under_a_budget(tok):
    """One engine constructor (`Engine.for_tokenizer`): `hytron serve`, evaluation (`generate(tokenizer=)`) and
    the distillation/GRPO rollouts (`Roller`) give the same tokens for the same prompt and budget. Before, the
    rollouts built their engine without the line-end id, so a budget ended the thinking differently there."""
    from hytron.infer.rollout import Roller, RolloutPrompt
    from hytron.serve.backend import Backend, ServeConfig

    m = never_stops(tok)
    prompt = chat_prompt(tok, "What is 6 times 7? /think")
    budget, max_tokens = 5, 30
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, thinking=True, max_thinking_tokens=budget)
    [evaluated] = generate(m, [prompt], params, tokenizer=tok)
    [[rolled]] = Roller(m, tok).rollout([RolloutPrompt(prompt, lambda text: True)], max_tokens=max_tokens,
                                         max_thinking_tokens=budget)
    backend = Backend(m, tok, ServeConfig(max_slots=2))
    req = backend.engine.submit(prompt, params)
    backend.engine.run_until_idle()
    served = req.result()
    assert served.thinking_forced and rolled.thinking_forced
    assert list(evaluated.token_ids) == rolled.token_ids == list(served.token_ids)
    # the forced close writes the line end first, then </think>
    end = served.token_ids.index(tok.think_end_id)
    assert served.token_ids[end - 1] in tok.encode("\n")
    # the settings the rollouts used before (no line-end id) end the thinking elsewhere
    [old] = generate(m, [prompt], params, **engine_kwargs(tok))
    assert list(old.token_ids) != list(served.token_ids)
