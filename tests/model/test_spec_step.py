"""The static speculation steps (`hytron.model.spec_step`) compute what the model's own cached forward and the MTP
drafter compute: verification over K+1 tokens (KV, lengths, the per-token Mamba states rollback picks from) and
greedy drafting (drafts and the head's cache after it), eager and torch.compile'd (with the few-row matmul pass)."""

import pytest
import torch

from hytron.infer.sampling import SamplingParams
from hytron.infer.speculative import MTPDrafter
from hytron.model import HybridConfig, HybridLM, spec_step
from hytron.model.cache import KVState, MambaState
from tests.conftest import randomize


def mtp_model(mtp_pattern: str = "M*-") -> HybridLM:
    cfg = HybridConfig.from_name("hytron-tiny", vocab_size=96, num_nextn_predict_layers=1, mtp_pattern=mtp_pattern)
    return randomize(HybridLM(cfg).eval(), 0)


def assert_caches_equal(a, b, rows):
    assert a.lengths.tolist() == b.lengths.tolist()
    for x, y in zip(a.layers, b.layers):
        if isinstance(x, MambaState):
            torch.testing.assert_close(x.conv, y.conv, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(x.ssm, y.ssm, atol=1e-5, rtol=1e-4)
        elif isinstance(x, KVState):
            for r in range(rows):
                n = int(a.lengths[r])
                torch.testing.assert_close(x.k[r, :, :n], y.k[r, :, :n], atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(x.v[r, :, :n], y.v[r, :, :n], atol=1e-5, rtol=1e-4)


def prefilled(model, rows: int, lengths=(7, 12, 3)):
    """Two caches holding the same rows of different lengths (fed one row at a time, then gathered)."""
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(2):
        cache = model.new_cache(rows, capacity=32)
        for r in range(rows):
            one = model.new_cache(1, capacity=32)
            model(torch.randint(0, 96, (1, lengths[r]), generator=torch.Generator().manual_seed(r)), one)
            cache.insert(r, one)
        out.append(cache)
    return out, torch.randint(0, 96, (rows, 5), generator=g)


@pytest.mark.parametrize("compiled", [False, True])
def test_verify_step_is_the_tracked_forward(compiled):
    model = mtp_model()
    rows = 3 if not compiled else 1  # compiled: the engine's batch-1 case (one compilation, a few seconds)
    (mine, ref), feed = prefilled(model, rows)
    keep = torch.tensor([2, 5, 1])[:rows]
    with torch.no_grad():
        ref.track(True)
        want_hidden = model(feed, ref, return_hidden=True)
        want_logits = model.lm_head(want_hidden)
        ref.rollback(keep)
        if compiled:
            spec_step.mark_dynamic(mine)
        step = spec_step.compiled("verify") if compiled else spec_step.verify_step
        hidden, logits, tracked = step(model, mine, feed)
        for s, t in zip(mine.layers, tracked):
            if t is not None:
                s.track, (s.conv_steps, s.ssm_steps) = True, t
        mine.last_fed = feed.size(1)
        mine.rollback(keep)
    torch.testing.assert_close(hidden, want_hidden, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, want_logits, atol=1e-4, rtol=1e-4)
    assert_caches_equal(mine, ref, rows)


@pytest.mark.parametrize("mtp_pattern", ["M*-", "*-"])
def test_draft_step_drafts_what_the_drafter_drafts(mtp_pattern):
    """Greedy drafts, with a banned id, rows catching up on different numbers of positions; the head's cache ends
    the same as the drafter's (the K-1 deeper steps undone)."""
    model = mtp_model(mtp_pattern)
    k, rows = 3, 3
    drafter = MTPDrafter(model, k)
    g = torch.Generator().manual_seed(1)
    caches = [model.new_mtp_cache(rows, capacity=32) for _ in range(2)]
    greedy = [SamplingParams(temperature=0)] * rows
    with torch.no_grad():
        for widths in ([1, 3, 4], [4, 2, 1], [2, 4, 3]):
            pending = [torch.randn(w, model.config.hidden_size, generator=g) for w in widths]
            tails = [torch.randint(0, 96, (w,), generator=g).tolist() for w in widths]
            banned = [(), (5, 7), ()]
            want, _ = drafter.draft(caches[0], pending, tails, greedy, [None] * rows, banned)
            hidden = torch.zeros(rows, k + 1, model.config.hidden_size)
            tokens = torch.zeros(rows, k + 1, dtype=torch.long)
            for r, w in enumerate(widths):
                hidden[r, :w], tokens[r, :w] = pending[r], torch.tensor(tails[r])
            bias = torch.zeros(rows, 96)
            bias[1, [5, 7]] = float("-inf")
            got = spec_step.draft_step(model, caches[1], hidden, tokens, torch.tensor(widths), k, bias)
            assert got.tolist() == want
            assert_caches_equal(caches[1], caches[0], rows)
