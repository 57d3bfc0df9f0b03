"""HybridLM behaviour: shapes, causality, chunk invariance, cached decode, configs and presets."""

import pytest
import torch

from hytron.config import ConfigError
from hytron.model import PRESETS, HybridConfig, HybridLM
from tests.conftest import tiny_model

PRESETS_WITH_COUNTS = [n for n, p in PRESETS.items() if "published" in p]


def test_logits_shape(tiny):
    ids = torch.randint(0, tiny.config.vocab_size, (3, 21))
    assert tiny(ids).shape == (3, 21, tiny.config.vocab_size)
    assert tiny(ids, last_only=True).shape == (3, 1, tiny.config.vocab_size)


@pytest.mark.parametrize("preset", ["hytron-tiny", "hytron-tiny-moe"])
def test_logits_do_not_depend_on_chunk_size(preset):
    ids = torch.randint(0, 512, (2, 50))
    ref = tiny_model(preset, chunk_size=64)
    with torch.no_grad():
        want = ref(ids)
        for chunk in (1, 5, 16):
            m = tiny_model(preset, chunk_size=chunk)
            m.load_state_dict(ref.state_dict())
            assert torch.allclose(m(ids), want, atol=1e-5, rtol=0), chunk


@pytest.mark.parametrize("preset", ["hytron-tiny", "hytron-tiny-moe"])
def test_future_tokens_never_change_past_logits(preset):
    m = tiny_model(preset)
    ids = torch.randint(0, 512, (1, 40))
    changed = ids.clone()
    changed[0, 25:] = (changed[0, 25:] + 7) % 512
    with torch.no_grad():
        a, b = m(ids), m(changed)
    assert torch.equal(a[:, :25], b[:, :25])
    assert not torch.allclose(a[:, 25:], b[:, 25:])


@pytest.mark.parametrize("preset", ["hytron-tiny", "hytron-tiny-moe"])
def test_prefill_then_cached_decode_equals_full_forward(preset):
    m = tiny_model(preset)
    ids = torch.randint(0, 512, (2, 37))
    with torch.no_grad():
        full = m(ids)
        cache = m.new_cache(2, capacity=8)  # small capacity: the KV buffers must grow on the way
        parts = [m(ids[:, :19], cache)]
        parts += [m(ids[:, t:t + 1], cache) for t in range(19, 30)]
        parts.append(m(ids[:, 30:], cache))  # multi-token continuation from a non-empty cache
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5, rtol=0)
    assert cache.lengths.tolist() == [37, 37]


def test_batched_rows_of_different_lengths_decode_like_single_rows(tiny):
    prompts = [torch.randint(0, 512, (1, n)) for n in (5, 17, 11)]
    with torch.no_grad():
        singles = []
        for p in prompts:
            c = tiny.new_cache(1)
            tiny(p, c)
            singles.append(tiny(torch.tensor([[3]]), c))
        batch = tiny.new_cache(3)
        for slot, p in enumerate(prompts):
            c = tiny.new_cache(1)
            tiny(p, c)
            batch.insert(slot, c)
        together = tiny(torch.tensor([[3], [3], [3]]), batch)
    for i in range(3):
        assert torch.allclose(together[i], singles[i][0], atol=1e-5, rtol=0)



def test_fill_gathers_rows_from_several_caches_as_insert_does(tiny):
    """The engine rebuilds its batch with `fill`: rows of a batched cache (in any order, some skipped) and of
    batch-1 caches, and empty slots for sequences with no state yet, land as `insert` puts them one by one,
    into a cache of a larger capacity; decoding on from the filled cache gives each row's own logits."""
    V = tiny.config.vocab_size
    with torch.no_grad():
        shared = tiny.new_cache(4, capacity=32)
        tiny(torch.randint(0, V, (4, 9)), shared)
        tiny(torch.randint(0, V, (4, 3)), shared, fed=torch.tensor([3, 1, 2, 1]))  # rows of different lengths
        own = [tiny.new_cache(1, capacity=16) for _ in range(2)]
        for n, c in zip((5, 13), own):
            tiny(torch.randint(0, V, (1, n)), c)
        rows = [(shared, 3), (own[1], 0), (None, 0), (shared, 0), (shared, 2), (own[0], 0)]
        filled, inserted = tiny.new_cache(6, capacity=64), tiny.new_cache(6, capacity=64)
        filled.fill(rows)
        for slot, (c, r) in enumerate(rows):
            if c is not None:
                inserted.insert(slot, c, row=r)
        assert filled.lengths.tolist() == [10, 13, 0, 12, 11, 5]
        assert torch.equal(filled.lengths, inserted.lengths)
        for a, b in zip(filled.layers, inserted.layers):
            for name in ("conv", "ssm") if hasattr(a, "ssm") else ("k", "v") if a is not None else ():
                got, want = getattr(a, name), getattr(b, name)
                if name in ("k", "v"):  # up to each row's length; past it nothing is read
                    for slot, n in enumerate(filled.lengths.tolist()):
                        assert torch.equal(got[slot, :, :n], want[slot, :, :n])
                else:
                    assert torch.equal(got, want)
        tok = torch.randint(0, V, (6, 1))
        torch.testing.assert_close(tiny(tok, filled), tiny(tok, inserted), atol=1e-5, rtol=0)

def test_cache_reset_forgets_a_row(tiny):
    with torch.no_grad():
        c = tiny.new_cache(1)
        fresh = tiny(torch.tensor([[1, 2, 3]]), c)
        tiny(torch.tensor([[4, 5]]), c)
        c.reset(0)
        again = tiny(torch.tensor([[1, 2, 3]]), c)
    assert torch.allclose(fresh, again, atol=1e-6)


def test_ssm_state_memory_is_constant_in_context_but_kv_grows():
    cfg = HybridConfig.from_name("nano-9b-v2")
    short, long = cfg.inference_state_bytes(1024), cfg.inference_state_bytes(65536)
    assert short["ssm_state"] == long["ssm_state"]
    assert long["kv_cache"] == 64 * short["kv_cache"]


def test_loss_falls_when_training_a_few_steps(tiny):
    tiny.train()
    opt = torch.optim.AdamW(tiny.param_groups(0.1), lr=3e-3)
    ids = torch.randint(0, 512, (4, 33))
    losses = []
    for _ in range(8):
        loss = tiny.loss(ids[:, :-1], ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_no_weight_decay_on_norms_and_ssm_scalars(tiny):
    groups = tiny.param_groups(0.1)
    no_decay = {id(p) for p in groups[1]["params"]}
    for name, p in tiny.named_parameters():
        special = name.endswith(("A_log", ".D", "dt_bias")) or "norm" in name or name.endswith("bias")
        assert (id(p) in no_decay) == special, name


@pytest.mark.parametrize("name", PRESETS_WITH_COUNTS)
def test_published_presets_build_on_meta_and_match_published_counts(name):
    cfg = HybridConfig.from_name(name)
    with torch.device("meta"):
        model = HybridLM(cfg)
    n = model.num_params()
    assert n == cfg.num_params()
    published = PRESETS[name]["published"]
    assert abs(n - published) / published < 0.01, (n, published)
    if "published_active" in PRESETS[name]:
        active = cfg.num_params(active=True)
        assert abs(active - PRESETS[name]["published_active"]) / PRESETS[name]["published_active"] < 0.01


def test_tiny_presets_are_the_advertised_sizes():
    assert 0.5e6 < HybridConfig.from_name("hytron-tiny").num_params() < 2e6
    assert 5e6 <= HybridConfig.from_name("hytron-small").num_params() <= 20e6


@pytest.mark.parametrize("bad,field", [
    (dict(pattern="M-X"), "pattern"),
    (dict(pattern=""), "pattern"),
    (dict(num_attention_heads=6, num_key_value_heads=4), "num_attention_heads"),
    (dict(mamba_num_heads=6, n_groups=4), "mamba_num_heads"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(pattern="ME", n_routed_experts=4, num_experts_per_tok=5, moe_intermediate_size=8), "num_experts_per_tok"),
    (dict(hidden_size="big"), "hidden_size"),
    (dict(hiden_size=3), "unknown field"),
])
def test_bad_configs_are_refused_naming_the_field(bad, field):
    base = {**PRESETS["hytron-tiny"]["config"], **bad}
    with pytest.raises(ConfigError, match=field):
        HybridConfig.from_dict(base)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(KeyError, match="nano-9b-v2"):
        HybridConfig.from_name("nano-9b")
