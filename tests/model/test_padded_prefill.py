"""Right-padded rows in one prefill forward (`HybridLM.forward(..., fed=...)`): prompts of different lengths fed
together leave every row exactly where feeding it alone leaves it (logits at its last real token, lengths, Mamba
conv and SSM state, attention KV), and decoding on agrees; padding is refused where it cannot be honoured."""

import pytest
import torch

from hytron.model.cache import KVState, MambaState
from tests.conftest import tiny_model


def test_padded_rows_equal_each_row_fed_alone():
    model = tiny_model()  # M-M*-M-: Mamba and attention
    torch.manual_seed(0)
    before, lens = [5, 0, 9, 3], [7, 19, 1, 12]  # tokens already cached, then each row's slice
    toks = [torch.randint(0, 512, (b + n,)) for b, n in zip(before, lens)]
    with torch.no_grad():
        refs, batch = [], model.new_cache(4, capacity=32)
        for r, (t, b) in enumerate(zip(toks, before)):
            ref = model.new_cache(1, capacity=32)
            if b:
                model(t[None, :b], ref)
            batch.insert(r, ref)  # the batched cache starts from each row's own prefix
            refs.append((model(t[None, b:], ref, last_only=True)[0, -1], ref))
        ids = torch.zeros(4, max(lens), dtype=torch.long)  # pad id 0 is a real token id: padding must not matter
        for r, (t, b, n) in enumerate(zip(toks, before, lens)):
            ids[r, :n] = t[b:]
        got = model(ids, batch, last_only=True, fed=torch.tensor(lens))[:, -1]
        for r, (want, ref) in enumerate(refs):
            torch.testing.assert_close(got[r], want, atol=1e-5, rtol=1e-4)
            n = int(ref.lengths[0])
            assert int(batch.lengths[r]) == n == before[r] + lens[r]
            for mine, theirs in zip(batch.layers, ref.layers):
                if isinstance(mine, MambaState):
                    torch.testing.assert_close(mine.conv[r], theirs.conv[0], atol=1e-6, rtol=1e-5)
                    torch.testing.assert_close(mine.ssm[r], theirs.ssm[0], atol=1e-5, rtol=1e-4)
                elif isinstance(mine, KVState):
                    torch.testing.assert_close(mine.k[r, :, :n], theirs.k[0, :, :n], atol=1e-5, rtol=1e-4)
                    torch.testing.assert_close(mine.v[r, :, :n], theirs.v[0, :, :n], atol=1e-5, rtol=1e-4)
        nxt = torch.randint(0, 512, (4, 1))  # decoding on: the padding's KV past each length is never read
        step = model(nxt, batch)[:, -1]
        for r, (_, ref) in enumerate(refs):
            torch.testing.assert_close(step[r], model(nxt[r:r + 1], ref)[0, -1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape, fed, says", [
    ((2, 4), [4, 0], "1..4"), ((2, 4), [5, 2], "1..4"), ((2, 4), [3], "2 counts"), ((2, 1), [1, 1], "more than one"),
])
def test_bad_padding_is_refused(shape, fed, says):
    model = tiny_model()
    with torch.no_grad(), pytest.raises(ValueError, match=says):
        model(torch.zeros(shape, dtype=torch.long), model.new_cache(shape[0], capacity=8), fed=torch.tensor(fed))


def test_a_padded_forward_cannot_be_rolled_back():
    model = tiny_model()
    with torch.no_grad():
        cache = model.new_cache(2, capacity=8)
        model(torch.zeros(2, 3, dtype=torch.long), cache, fed=torch.tensor([3, 1]))
        with pytest.raises(RuntimeError, match="right-padded"):
            cache.rollback(torch.tensor([1, 1]))
        cache.track(True)  # the tracked scan (speculative verification) would treat the padding as tokens
        with pytest.raises(ValueError, match="tracks states"):
            model(torch.zeros(2, 3, dtype=torch.long), cache, fed=torch.tensor([3, 1]))
