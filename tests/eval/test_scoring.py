"""Scorer: batched, right-padded log-likelihoods equal one-row-at-a-time computations; windows; bits per byte."""

import math

import pytest
import torch
import torch.nn.functional as F

from hytron.eval.scoring import Scorer, bits_per_byte
from tests.conftest import randomize
from tests.infer.chatmodel import tiny_chat_model, train_tokenizer


@pytest.fixture(scope="module")
def scorer():
    tok = train_tokenizer()
    return Scorer(randomize(tiny_chat_model(tok, seed=3)), tok, batch_size=3)


def _direct_logprob(model, ids, n):
    """log p of the last n ids, from one unpadded forward pass."""
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ids[:-1]])).float()[0], -1)
    return sum(float(logp[i - 1, ids[i]]) for i in range(len(ids) - n, len(ids)))


def test_batched_loglikelihood_equals_single_rows(scorer):
    pairs = [("The river Alder rises", " on Mount Kell"), ("Question: what is 6 times 7?\nAnswer:", " 42"),
             ("Once", " upon a time, a fox named Ilse lived at the edge of the wood."), ("", "Lesson 3"),
             ("A fox ", "liked apples.")]
    got = scorer.loglikelihood(pairs)
    for (ctx, cont), (lp, greedy) in zip(pairs, got):
        c, x = scorer.encode_pair(ctx, cont)
        assert c[0] == scorer.tokenizer.bos_id
        assert scorer.tokenizer.decode(c[1:] + x) == ctx + cont  # nothing lost by the whitespace move
        assert lp == pytest.approx(_direct_logprob(scorer.model, c + x, len(x)), abs=1e-4)
        assert lp < 0 and isinstance(greedy, bool)
    # the trailing space joins the continuation: "A fox " + "liked" is scored as "A fox" + " liked"
    assert scorer.encode_pair("A fox ", "liked")[1] == scorer.tokenizer.encode(" liked")


def test_greedy_flag_matches_argmax(scorer):
    ctx = [scorer.tokenizer.bos_id, *scorer.tokenizer.encode("The river")]
    with torch.no_grad():
        nxt = int(scorer.model(torch.tensor([ctx]))[0, -1].argmax())
    other = (nxt + 1) % scorer.tokenizer.vocab_size
    (_, g1), (_, g2) = scorer.loglikelihood_ids([(ctx, [nxt]), (ctx, [other])])
    assert g1 is True and g2 is False


def test_document_nll_windows_and_bits_per_byte(scorer):
    text = "The river Alder rises on Mount Kell and flows north to the sea. " * 6
    tok = scorer.tokenizer
    ids = [tok.bos_id, *tok.encode(text), tok.eos_id]
    short = Scorer(scorer.model, tok, max_len=16)
    [doc] = short.document_nll([text])
    assert doc["tokens"] == len(ids) - 1
    assert doc["bytes"] == len(text.encode("utf-8"))  # </s> carries no bytes
    expected = -sum(_direct_logprob(scorer.model, ids[s:s + 17], len(ids[s:s + 17]) - 1)
                    for s in range(0, len(ids) - 1, 16))
    assert doc["nll"] == pytest.approx(expected, rel=1e-5)
    [full] = scorer.document_nll([text])  # one window: more context, a different (here: any) value
    assert full["tokens"] == doc["tokens"]
    assert bits_per_byte(doc["nll"], doc["bytes"]) == pytest.approx(doc["nll"] / math.log(2) / doc["bytes"])
    [no_eos] = scorer.document_nll([text], eos=False)
    assert no_eos["tokens"] == len(ids) - 2


def test_empty_continuation_is_an_error(scorer):
    with pytest.raises(ValueError, match="empty continuation"):
        scorer.loglikelihood_ids([([1, 2], [])])
