"""Sampling filters keep exactly the tokens they should; incremental text equals one-shot decoding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hytron.infer import SamplingParams, TextStream, sample
from hytron.infer.sampling import filter_logits
from tests.infer.chatmodel import train_tokenizer


def draws(logits, params, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [sample(logits, params, g) for _ in range(n)]


def test_top_k_top_p_min_p_keep_the_right_sets():
    logits = torch.log(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]))
    assert set(draws(logits, SamplingParams(top_k=2))) <= {0, 1}
    assert set(draws(logits, SamplingParams(top_p=0.6))) == {0, 1}  # 0.5 < 0.6: the second token is needed
    assert set(draws(logits, SamplingParams(top_p=0.5))) == {0}
    assert set(draws(logits, SamplingParams(min_p=0.3))) == {0, 1, 2}  # p >= 0.3 * 0.5
    assert set(draws(logits, SamplingParams(temperature=0))) == {0}
    assert set(draws(logits, SamplingParams(top_k=1, temperature=3.0))) == {0}
    assert set(draws(logits, SamplingParams(), n=2000)) == {0, 1, 2, 3, 4}
    g = torch.Generator().manual_seed(1)
    assert 0 not in {sample(logits, SamplingParams(), g, banned=(0,)) for _ in range(200)}
    assert sample(logits, SamplingParams(temperature=0), g, banned=(0,)) == 1


def test_sampling_frequencies_follow_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    counts = torch.bincount(torch.tensor(draws(torch.log(probs), SamplingParams(), n=4000)), minlength=3)
    assert (counts / 4000 - probs).abs().max() < 0.03


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=30), st.floats(0.05, 1.0), st.integers(0, 10))
def test_filtered_distribution_is_a_top_prefix(values, top_p, top_k):
    logits = torch.tensor(values)
    kept = filter_logits(logits, SamplingParams(top_p=top_p, top_k=top_k)) > float("-inf")
    assert kept.any()
    # whatever is kept has logits >= whatever is dropped
    if (~kept).any():
        assert logits[kept].min() >= logits[~kept].max()


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


@settings(max_examples=50, deadline=None)
@given(text=st.text(min_size=0, max_size=60))
def test_incremental_text_equals_one_shot_decoding(tok, text):
    ids = tok.encode(text)
    stream = TextStream(tok.decode)
    out = "".join(stream.push(i) for i in ids) + stream.flush()
    assert out == tok.decode(ids) == text


@settings(max_examples=50, deadline=None)
@given(text=st.text(min_size=0, max_size=60), switch=st.integers(0, 60), stop=st.sampled_from([None, "a", "\n\n"]))
def test_text_decoded_at_the_end_equals_text_decoded_as_it_comes(tok, text, switch, stop):
    """A request whose deltas nobody reads (`Request.wants_only_the_result`, from any token on) gets the same
    text, decoded once at the end; stop strings are still watched token by token."""
    ids = tok.encode(text)
    stops = [stop] if stop else []
    eager, lazy = TextStream(tok.decode, stops), TextStream(tok.decode, stops)
    want = "".join(eager.push(i) for i in ids) + eager.flush()
    got = "".join(lazy.push(i, text=n < switch) for n, i in enumerate(ids)) + lazy.flush()
    assert got == want and lazy.stopped == eager.stopped
    if not stops:
        assert got == text


def test_multibyte_characters_are_held_until_complete(tok):
    ids = tok.encode("🚀")
    assert len(ids) > 1  # bytes of one character in several tokens
    stream = TextStream(tok.decode)
    parts = [stream.push(i) for i in ids]
    assert parts[:-1] == [""] * (len(ids) - 1) and parts[-1] == "🚀"


@settings(max_examples=50, deadline=None)
@given(text=st.text(alphabet="ab\nc", min_size=1, max_size=40), stop=st.text(alphabet="ab\nc", min_size=1, max_size=3))
def test_stop_strings_cut_at_the_first_match(tok, text, stop):
    ids = tok.encode(text)
    stream = TextStream(tok.decode, [stop])
    out = "".join(stream.push(i) for i in ids) + stream.flush()
    if stop in text:
        assert out == text[: text.index(stop)] and stream.stopped == stop
    else:
        assert out == text and stream.stopped is None
