"""Presence, frequency and repetition penalties change logits exactly as vLLM's formulas say, per request."""

import pytest
import torch

from hytron.infer import Engine, SamplingParams, sample
from hytron.infer.sampling import TokenHistory, apply_penalties
from tests.infer.chatmodel import tiny_chat_model, train_tokenizer


def test_penalties_match_a_hand_computation():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0])
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=2.0)
    history = TokenHistory([0, 3], 5, params)  # the prompt holds ids 0 and 3
    for t in (2, 2, 4):  # generated: id 2 twice, id 4 once
        history.add(t)
    got = apply_penalties(logits, history.seen, history.counts, 0.5, 0.25, 2.0)
    # id 0: prompt, positive: 2 / 2 = 1           id 1: never seen: unchanged
    # id 2: generated twice: 0.5 / 2 - 0.25 * 2 - 0.5 = -0.75
    # id 3: prompt, negative: -3 * 2 = -6         id 4: generated once: 1 / 2 - 0.25 - 0.5 = -0.25
    assert got.tolist() == [1.0, -1.0, -0.75, -6.0, -0.25]
    # presence and frequency count generated tokens only: the prompt's ids are untouched without repetition
    plain = TokenHistory([0, 3], 5, SamplingParams(presence_penalty=1.0))
    assert torch.equal(apply_penalties(logits, plain.seen, plain.counts, 1.0, 1.0, 1.0), logits)
    # negative presence/frequency penalties favour repeats; the same function runs rows with their own values
    rows = apply_penalties(torch.stack([logits, logits]), torch.stack([history.seen] * 2),
                           torch.stack([history.counts] * 2), torch.tensor([[0.5], [-1.0]]),
                           torch.tensor([[0.25], [0.0]]), torch.tensor([[2.0], [1.0]]))
    assert rows[0].tolist() == got.tolist()
    assert rows[1].tolist() == [2.0, -1.0, 1.5, -3.0, 2.0]
    # greedy sampling takes the argmax after the penalties (and logit_bias comes first, as in vLLM)
    g = torch.Generator()
    assert sample(logits, SamplingParams(temperature=0), g) == 0
    assert sample(logits, SamplingParams(temperature=0, repetition_penalty=2.0, presence_penalty=0.5,
                                         frequency_penalty=0.25), g, history=history) == 0
    biased = SamplingParams(temperature=0, repetition_penalty=4.0, logit_bias={4: 2.0})  # (1 + 2) / 4 = 0.75
    h = TokenHistory([0, 4], 5, biased)
    assert sample(logits, biased, g, history=h) == 4  # 0.75 beats 2 / 4 = 0.5
    with pytest.raises(ValueError, match="TokenHistory"):
        sample(logits, params, g)


@pytest.mark.parametrize("bad", [dict(presence_penalty=2.5), dict(frequency_penalty=-2.1),
                                 dict(repetition_penalty=0.0), dict(repetition_penalty=float("inf"))])
def test_penalty_bounds_name_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


def _reference(model, prompt, params, n):
    """Greedy decoding by full forward passes, penalties applied by hand over the prompt and the output."""
    ids, out = list(prompt), []
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1].float()
        seen = torch.zeros(logits.numel(), dtype=torch.bool)
        counts = torch.zeros(logits.numel())
        if params.repetition_penalty != 1:
            seen[prompt] = True
        for t in out:
            counts[t] += 1
            seen[t] = True
        logits = apply_penalties(logits, seen, counts, params.presence_penalty, params.frequency_penalty,
                                 params.repetition_penalty)
        out.append(int(torch.argmax(logits)))
        ids.append(out[-1])
    return out


def test_batched_requests_each_get_their_own_penalties():
    tok = train_tokenizer()
    model = tiny_chat_model(tok)
    prompt = tok.encode("The river Alder rises on Mount Kell")
    plist = [SamplingParams(max_tokens=24, temperature=0, ignore_eos=True),
             SamplingParams(max_tokens=24, temperature=0, ignore_eos=True, repetition_penalty=1.8),
             SamplingParams(max_tokens=24, temperature=0, ignore_eos=True, frequency_penalty=1.5,
                            presence_penalty=0.5)]
    engine = Engine(model, max_slots=4)
    reqs = [engine.submit(prompt, p) for p in plist]
    engine.run_until_idle()
    outs = [r.result().token_ids for r in reqs]
    for p, got in zip(plist, outs):
        assert got == _reference(model, prompt, p, 24)
    assert len(set(outs[0])) < 24  # unpenalized greedy decoding repeats itself within 24 tokens ...
    assert len(set(outs[1])) == len(set(outs[2])) == 24  # ... and both penalties stop it
