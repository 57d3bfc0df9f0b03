"""Taking tokens back from a HybridCache (speculative decoding): after a tracked forward of L tokens, rolling a row
back to its first j tokens leaves exactly the state of a cache that was fed only those j, Mamba state included."""

import pytest
import torch

from hytron.model.cache import KVState, MambaState
from tests.conftest import tiny_model


@pytest.mark.parametrize("rows", [3, 1])  # one row takes the slicing path
def test_rollback_equals_feeding_only_the_kept_tokens(rows):
    model = tiny_model()  # M-M*-M-: Mamba and attention
    torch.manual_seed(0)
    prefix = torch.randint(0, 512, (3, 9))[:rows]
    new = torch.randint(0, 512, (3, 5))[:rows]
    keep = torch.tensor([3, 5, 1])[:rows]
    with torch.no_grad():
        cache = model.new_cache(rows, capacity=16)
        model(prefix, cache)
        cache.track(True)
        model(new, cache)
        cache.rollback(keep)
        for r in range(rows):
            ref = model.new_cache(1, capacity=16)
            model(torch.cat([prefix[r], new[r, :keep[r]]])[None], ref)
            assert int(cache.lengths[r]) == int(ref.lengths[0]) == 9 + int(keep[r])
            for mine, theirs in zip(cache.layers, ref.layers):
                if isinstance(mine, MambaState):
                    torch.testing.assert_close(mine.conv[r], theirs.conv[0], atol=1e-6, rtol=1e-5)
                    torch.testing.assert_close(mine.ssm[r], theirs.ssm[0], atol=1e-5, rtol=1e-4)
                    assert mine.ssm_steps is None and not mine.track
                elif isinstance(mine, KVState):
                    n = 9 + int(keep[r])
                    torch.testing.assert_close(mine.k[r, :, :n], theirs.k[0, :, :n], atol=1e-5, rtol=1e-4)
        # decoding on from the rolled-back rows gives what decoding on from the reference gives
        nxt = torch.randint(0, 512, (rows, 1))
        got = model(nxt, cache)[:, -1]
        for r in range(rows):
            want = model(torch.cat([prefix[r], new[r, :keep[r]], nxt[r]])[None])[0, -1]
            torch.testing.assert_close(got[r], want, atol=1e-4, rtol=1e-4)


def test_snapshot_restore_undoes_steps():
    model = tiny_model()
    with torch.no_grad():
        cache = model.new_cache(2, capacity=16)
        model(torch.randint(0, 512, (2, 6)), cache)
        snap = cache.snapshot()
        before = model(torch.tensor([[7], [8]]), cache)
        model(torch.randint(0, 512, (2, 3)), cache)
        cache.restore(snap)
        torch.testing.assert_close(model(torch.tensor([[7], [8]]), cache), before)
