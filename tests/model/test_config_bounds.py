"""An untrusted model folder: config.json sizes bounded before allocation, shard names confined to the folder.

Issue 26 items 8 and 10: `chunk_size: 100000` loaded and then every prefill tried to allocate 10 GB; a 10^6-character
layer pattern had not loaded after 90 s; a shard index naming /abs/x.safetensors or ../../x.safetensors loaded files
from outside the model folder, and its errors said whether an outside path existed.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch

from hytron.config import ConfigError
from hytron.model.config import SIZE_LIMITS, HybridConfig
from hytron.model.hf import INDEX_NAME, config_from_hf, config_to_hf
from hytron.model.hybrid import HybridLM
from hytron.model.ssd import ssd_chunked


def _hf_tiny() -> dict:
    return config_to_hf(HybridConfig.from_name("hytron-tiny"))


@pytest.mark.parametrize("field", sorted(SIZE_LIMITS))
def test_every_size_over_its_limit_is_refused_by_name(field):
    data = {**_hf_tiny(), "hybrid_override_pattern": "M*-E", "n_routed_experts": 8, "num_experts_per_tok": 2,
            "moe_intermediate_size": 64, "moe_shared_expert_intermediate_size": 64}
    data[field] = SIZE_LIMITS[field] + 1
    with pytest.raises(ConfigError, match=rf"\b{field}\b"):
        config_from_hf(data)


def test_chunk_size_100000_is_refused_before_loading(tmp_path):
    model = HybridLM(HybridConfig.from_name("hytron-tiny"))
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "chunk_size": 100_000}))
    with pytest.raises(ConfigError, match=r"chunk_size: must be an integer in 0\.\.1024"):
        HybridLM.from_pretrained(tmp_path)


def test_scan_work_per_chunk_is_bounded_whatever_the_chunk_size():
    """The reference scan caps its chunk (memory b·H·L·Q): a chunk of 100000 gives chunk 16's result instead of
    allocating a 100000 x 100000 decay (80 GB) per head."""
    torch.manual_seed(0)
    b, L, H, P, G, N = 1, 300, 4, 8, 2, 8
    x, B, C = torch.randn(b, L, H, P), torch.randn(b, L, G, N), torch.randn(b, L, G, N)
    dt, A = torch.rand(b, L, H) * 0.1, -torch.rand(H)
    y_ref, s_ref = ssd_chunked(x, dt, A, B, C, 16)
    t0 = time.perf_counter()
    y, s = ssd_chunked(x, dt, A, B, C, 100_000)
    assert time.perf_counter() - t0 < 5
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=1e-4)


def test_million_character_pattern_is_refused_at_once(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**_hf_tiny(), "hybrid_override_pattern": "M-" * 500_000}))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"pattern: must be 1\.\.1024 block kinds.*got 1000000") as e:
        HybridLM.from_pretrained(tmp_path)
    assert time.perf_counter() - t0 < 2 and len(str(e.value)) < 300
    (tmp_path / "config.json").write_text(json.dumps({**_hf_tiny(), "hybrid_override_pattern": None,
                                                      "layers_block_type": ["mamba"] * 100_000}))
    with pytest.raises(ConfigError, match="pattern"):
        HybridLM.from_pretrained(tmp_path)


def test_huge_config_json_is_refused_unread(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**_hf_tiny(), "pad": "x" * (5 * 2**20)}))
    with pytest.raises(ConfigError, match=r"config\.json of \d+ bytes, over the 4194304-byte limit"):
        HybridLM.from_pretrained(tmp_path)


def test_non_finite_and_absurd_counts_are_refused():
    with pytest.raises(ConfigError, match="norm_eps"):
        HybridConfig.from_dict({**HybridConfig.from_name("hytron-tiny").to_dict(), "norm_eps": float("nan")})
    with pytest.raises(ConfigError, match="parameters, over"):  # every width legal, the product not
        HybridConfig(pattern="-" * 1024, hidden_size=65536, intermediate_size=2**20, vocab_size=2**22)


# ---- shard names ------------------------------------------------------------------------------------------------


@pytest.fixture
def sharded(tmp_path):
    """A tiny model saved in several shards, and an outside folder holding a copy of one shard."""
    folder = tmp_path / "model"
    HybridLM(HybridConfig.from_name("hytron-tiny")).save_pretrained(folder, max_shard_bytes=200_000)
    index = json.loads((folder / INDEX_NAME).read_text())
    outside = tmp_path / "outside"
    outside.mkdir()
    first = sorted(set(index["weight_map"].values()))[0]
    shutil.copy(folder / first, outside / "x.safetensors")
    return folder, index, first, outside


def _point(folder, index, first, name):
    wm = {k: (name if v == first else v) for k, v in index["weight_map"].items()}
    (folder / INDEX_NAME).write_text(json.dumps({**index, "weight_map": wm}))


def test_shard_names_outside_the_folder_are_refused_alike(sharded):
    folder, index, first, outside = sharded
    messages = []
    for name in [str(outside / "x.safetensors"), str(outside / "missing.safetensors"), "../outside/x.safetensors",
                 "../outside/missing.safetensors", "../../../../../../etc/passwd", "sub/../../outside/x.safetensors"]:
        _point(folder, index, first, name)
        with pytest.raises(ValueError, match="is not a file inside the model folder") as e:
            HybridLM.from_pretrained(folder)
        messages.append(str(e.value).replace(repr(name)[:200], "NAME"))
    assert len(set(messages)) == 1, messages  # existing and missing outside targets read the same


def test_symlink_out_of_the_folder_is_refused_alike(sharded):
    folder, index, first, outside = sharded
    messages = []
    for target in (outside / "x.safetensors", outside / "missing.safetensors"):
        link = folder / "linked.safetensors"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        _point(folder, index, first, "linked.safetensors")
        with pytest.raises(ValueError, match="is not a file inside the model folder") as e:
            HybridLM.from_pretrained(folder)
        messages.append(str(e.value))
    assert messages[0] == messages[1]
    # the index itself, the single-file layout and config.json are confined the same way
    index_text = (folder / INDEX_NAME).read_text()
    for target in (outside / "index.json", outside / "missing.json"):
        (folder / INDEX_NAME).unlink()
        (folder / INDEX_NAME).symlink_to(target)
        (outside / "index.json").write_text(index_text)
        with pytest.raises(ValueError, match="shard index 'model.safetensors.index.json' is not a file inside"):
            HybridLM.from_pretrained(folder)
    (folder / INDEX_NAME).unlink()
    (folder / "model.safetensors").symlink_to(outside / "x.safetensors")
    with pytest.raises(ValueError, match="weights file 'model.safetensors' is not a file inside"):
        HybridLM.from_pretrained(folder)
    shutil.move(folder / "config.json", outside / "config.json")
    (folder / "config.json").symlink_to(outside / "config.json")
    with pytest.raises(ValueError, match="config file 'config.json' is not a file inside"):
        HybridLM.from_pretrained(folder)


def test_inside_names_and_hf_cache_snapshots_still_load(tmp_path):
    model = HybridLM(HybridConfig.from_name("hytron-tiny"))
    folder = tmp_path / "m"
    model.save_pretrained(folder, max_shard_bytes=200_000)
    index = json.loads((folder / INDEX_NAME).read_text())
    (folder / "sub").mkdir()  # a shard in a subfolder, named with ./ and a harmless sub/.. detour
    first = sorted(set(index["weight_map"].values()))[0]
    shutil.move(folder / first, folder / "sub" / first)
    _point(folder, index, first, f"./sub/{first}")
    loaded = HybridLM.from_pretrained(folder)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
    # Hugging Face cache layout: snapshots/REV/* are symlinks to ../../blobs/SHA
    repo = tmp_path / "hub" / "models--org--tiny"
    snap, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    model.save_pretrained(tmp_path / "plain")
    for i, f in enumerate(sorted((tmp_path / "plain").iterdir())):
        shutil.copy(f, blobs / f"sha{i}")
        (snap / f.name).symlink_to(os.path.relpath(blobs / f"sha{i}", snap))
    torch.testing.assert_close(HybridLM.from_pretrained(snap).state_dict(), model.state_dict())
