"""Packing is deterministic and loses nothing; the loader follows the blend, resumes exactly, shards by rank."""

import gzip
import hashlib
import json
import random

import numpy as np
import pytest
import torch

from hytron.cli import main as cli_main
from hytron.data.mix import Blend
from hytron.packing import (
    PackedData,
    PackedLoader,
    iter_blend_texts,
    iter_eval_batches,
    iter_texts,
    pack,
    read_documents,
    token_dtype,
)
from hytron.tokenizer import Tokenizer

SOURCES = ("wiki", "math", "spam")
WORDS = ["alpha", "beta", "gamma", "delta", "river", "mountain", "seven", "plus", "equals", "story", "fox", "wood"]


def _doc(i: int, rng: random.Random) -> dict:
    source = SOURCES[i % 3]
    body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 80)))
    return {"id": f"doc-{i}", "text": f"{source.upper()}MARK {body}", "source": source,
            "quality_bucket": None if i % 7 == 0 else i % 5}


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """A curation-output-like dir: kept/ shards in .jsonl, .jsonl.gz and .jsonl.zst, plus broken lines."""
    root = tmp_path_factory.mktemp("curated")
    kept = root / "kept"
    kept.mkdir()
    rng = random.Random(0)
    docs = [_doc(i, rng) for i in range(900)]
    lines = [json.dumps(d) for d in docs]
    (kept / "shard-00000.jsonl").write_text("\n".join(lines[:300] + ["{not json", '{"id": "x"}']) + "\n")
    with gzip.open(kept / "shard-00001.jsonl.gz", "wt") as f:
        f.write("\n".join(lines[300:600]) + "\n")
    zstandard = pytest.importorskip("zstandard")
    (kept / "shard-00002.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        ("\n".join(lines[600:]) + "\n").encode()))
    return root, docs


@pytest.fixture(scope="module")
def tok(curated):
    return Tokenizer.train(iter_texts([curated[0]]), vocab_size=400)


def blend_for(root, **overrides):
    data = {"inputs": [str(root)], "validation_fraction": 0.1,
            "components": [{"name": "high", "weight": 0.7, "buckets": [3, 4]}, {"name": "rest", "weight": 0.3}]}
    data.update(overrides)
    return Blend.from_mapping(data)


@pytest.fixture(scope="module")
def packed(curated, tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "data"
    pack(blend_for(curated[0]), tok, out, shard_tokens=4000)
    return out


def _documents(data: PackedData, split: str, component: str, tok) -> list[str]:
    texts = []
    for shard in data.index["splits"][split]["components"][component]["shards"]:
        ids = np.fromfile(data.dir / shard["path"], dtype=data.dtype).astype(np.int64)
        starts = np.load(data.dir / shard["doc_offsets"])
        for a, b in zip(starts, [*starts[1:], len(ids)]):
            doc = ids[a:b]
            assert doc[0] == tok.bos_id and doc[-1] == tok.eos_id
            texts.append(tok.decode(doc[1:-1]))
    return texts


def test_reader_handles_compression_and_counts_bad_lines(curated):
    root, docs = curated
    from hytron.packing import ReadStats

    stats = ReadStats()
    records = list(read_documents(root, stats))
    assert [r["id"] for r in records] == [d["id"] for d in docs]
    assert stats.counts == {"invalid_json": 1, "missing_text": 1}


def test_plain_text_only_jsonl_gets_defaults(tmp_path):
    folder = tmp_path / "company-docs"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "hello"}\n\n{"text": ""}\n')
    [record] = read_documents(folder)
    assert record["source"] == "company-docs" and record["quality_bucket"] is None and record["id"] == "a.jsonl:1"


def test_curation_and_tinyweb_dirs_read_only_their_documents(tmp_path):
    curated = tmp_path / "curated"
    (curated / "kept").mkdir(parents=True)
    (curated / "removed").mkdir()
    (curated / "kept" / "part-0.jsonl").write_text(
        '{"id": "k", "text": "kept", "source": "s", "meta": {"quality_bucket": 3}}\n')
    (curated / "removed" / "part-0.jsonl").write_text('{"id": "r", "text": "removed", "source": "s"}\n')
    (curated / "kept" / ".tmp-3").mkdir()  # a shard being written by a running curation
    (curated / "kept" / ".tmp-3" / "part-3.jsonl").write_text('{"id": "t", "text": "half-written"}\n')
    (curated / "kept" / "part-0.done.json").write_text('{\n  "shard": 0\n}\n')
    assert [(r["id"], r["quality_bucket"]) for r in read_documents(curated)] == [("k", 3)]
    tinyweb = tmp_path / "tinyweb"
    for sub in ("corpus", "evals"):
        (tinyweb / sub).mkdir(parents=True)
    (tinyweb / "tinyweb.json").write_text("{}")
    (tinyweb / "corpus" / "crawl-00000.jsonl").write_text('{"id": "c", "text": "crawl"}\n')
    (tinyweb / "evals" / "validation.jsonl").write_text('{"id": "v", "text": "held-out"}\n')
    assert [r["text"] for r in read_documents(tinyweb)] == ["crawl"]


def test_token_dtype_fits_the_vocabulary():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_every_document_lands_once_with_bos_eos(packed, curated, tok):
    _, docs = curated
    data = PackedData(packed)
    assert data.dtype == np.uint16
    got = [t for s in ("train", "val") for c in ("high", "rest") for t in _documents(data, s, c, tok)]
    assert sorted(got) == sorted(d["text"] for d in docs)
    high = _documents(data, "train", "high", tok)
    expected_high = [d["text"] for d in docs if d["quality_bucket"] in (3, 4)]
    assert set(high) <= set(expected_high)
    assert len(data.index["splits"]["train"]["components"]["high"]["shards"]) > 1  # shard_tokens=4000 split it
    assert data.index["skipped"] == {"invalid_json": 1, "missing_text": 1}
    buckets = data.index["buckets"]
    assert sum(v["docs"] for s in ("train", "val") for v in buckets[s].values()) == len(docs)
    assert sum(v["docs"] for s in ("train", "val") for b, v in buckets[s].items() if b == "none") == \
        sum(d["quality_bucket"] is None for d in docs)
    assert data.index["splits"]["train"]["num_bytes"] > 0
    assert (packed / "tokenizer" / "tokenizer.json").is_file()


def test_validation_split_is_stable_and_disjoint(packed, curated, tok, tmp_path):
    root, docs = curated
    data = PackedData(packed)
    val = set(_documents(data, "val", "high", tok) + _documents(data, "val", "rest", tok))
    train = set(_documents(data, "train", "high", tok) + _documents(data, "train", "rest", tok))
    assert not val & train
    assert 0.05 < len(val) / len(docs) < 0.15
    # dropping a third of the corpus moves no remaining document between splits
    pack(blend_for(root, exclude={"sources": ["spam"]}), tok, tmp_path / "smaller")
    small = PackedData(tmp_path / "smaller")
    small_val = set(_documents(small, "val", "high", tok) + _documents(small, "val", "rest", tok))
    assert small_val == {t for t in val if not t.startswith("SPAMMARK")}


def _digest(directory):
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_packing_is_deterministic(curated, tok, tmp_path, packed):
    pack(blend_for(curated[0]), tok, tmp_path / "again", shard_tokens=4000)
    assert _digest(tmp_path / "again") == _digest(packed)


def test_exclusion_removes_the_source(curated, tok, tmp_path):
    root, _ = curated
    index = pack(blend_for(root, exclude={"sources": ["spam"]}), tok, tmp_path / "nospam")
    assert "spam" not in index["sources"]["train"] and "spam" not in index["sources"]["val"]
    data = PackedData(tmp_path / "nospam")
    for split in ("train", "val"):
        for comp in ("high", "rest"):
            text = tok.decode(data.tokens(split, comp))
            assert "SPAMMARK" not in text and "WIKIMARK" in text
    assert index["skipped"]["excluded"] == 300


def test_emptied_component_is_dropped_with_a_warning(curated, tok, tmp_path, capsys):
    root, _ = curated
    blend = blend_for(root, components=[{"name": "spam-only", "weight": 1, "sources": ["spam"]},
                                        {"name": "rest", "weight": 1}], exclude={"sources": ["spam"]})
    index = pack(blend, tok, tmp_path / "out")
    assert index["weights"] == {"rest": 1.0}
    assert "spam-only" in capsys.readouterr().err


def test_refuses_to_overwrite_without_permission(packed, curated, tok):
    with pytest.raises(FileExistsError, match="overwrite"):
        pack(blend_for(curated[0]), tok, packed)


# ---------------------------------------------------------------- loader
def _take(loader, n):
    return [next(loader) for _ in range(n)]


def test_loader_shapes_and_shift(packed, tok):
    loader = PackedLoader(packed, seq_len=32, batch_size=4, seed=0)
    x, y = next(loader)
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < tok.vocab_size


def test_loader_is_deterministic_per_seed(packed):
    a = _take(PackedLoader(packed, 32, 4, seed=3), 5)
    b = _take(PackedLoader(packed, 32, 4, seed=3), 5)
    c = _take(PackedLoader(packed, 32, 4, seed=4), 5)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))


def test_resume_is_exact(packed):
    reference = _take(PackedLoader(packed, 32, 4, seed=1), 12)
    first = PackedLoader(packed, 32, 4, seed=1)
    _take(first, 5)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    resumed = PackedLoader(packed, 32, 4, seed=1)
    resumed.load_state_dict(state)
    for (x, y), (rx, ry) in zip(reference[5:], _take(resumed, 7)):
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_resume_rejects_a_different_configuration(packed):
    state = PackedLoader(packed, 32, 4, seed=1).state_dict()
    with pytest.raises(ValueError, match="seq_len"):
        PackedLoader(packed, 16, 4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="weights"):
        PackedLoader(packed, 32, 4, seed=1, weights={"high": 1, "rest": 1}).load_state_dict(state)


def test_ranks_are_disjoint_and_form_the_single_process_batch(packed):
    single = PackedLoader(packed, 32, 8, seed=2)
    ranks = [PackedLoader(packed, 32, 4, seed=2, rank=r, world_size=2) for r in range(2)]
    for _ in range(6):
        x, _ = next(single)
        parts = [next(r)[0] for r in ranks]
        assert torch.equal(torch.cat(parts), x)
        rows0 = {tuple(r.tolist()) for r in parts[0]}
        assert not rows0 & {tuple(r.tolist()) for r in parts[1]}
    assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()


def test_checkpoint_moves_across_world_sizes_and_accumulation(packed):
    reference = _take(PackedLoader(packed, 32, 8, seed=5), 6)
    ranks = [PackedLoader(packed, 32, 4, seed=5, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        _take(r, 3)
    micro = PackedLoader(packed, 32, 2, seed=5)  # one process, 4 micro-batches of 2 per step
    micro.load_state_dict(ranks[1].state_dict())
    for x, _ in reference[3:]:
        assert torch.equal(torch.cat([next(micro)[0] for _ in range(4)]), x)


def test_weights_are_followed(packed):
    loader = PackedLoader(packed, 16, 64, seed=0)
    _take(loader, 40)
    counts = loader.state_dict()["counts"]
    share = counts["high"] / sum(counts.values())
    assert abs(share - 0.7) < 0.03
    override = PackedLoader(packed, 16, 64, seed=0, weights={"rest": 1.0})
    _take(override, 2)
    assert override.state_dict()["counts"] == {"rest": 128}


def test_an_epoch_visits_every_window_once(packed):
    data = PackedData(packed)
    n_windows = (data.stream("train", "high").num_tokens - 1) // 16
    loader = PackedLoader(data, 16, 1, seed=0, weights={"high": 1.0})
    rows = [tuple(next(loader)[0][0].tolist()) for _ in range(n_windows)]
    starts = [loader._window_start(0, k) for k in range(n_windows)]
    assert sorted(s - starts[0] % 16 for s in starts) == [16 * i for i in range(n_windows)]
    assert len(rows) == n_windows


def test_too_short_component_or_empty_split_is_a_clear_error(packed, curated, tok, tmp_path):
    with pytest.raises(ValueError, match="fewer than seq_len"):
        PackedLoader(packed, 10**7, 1)
    pack(blend_for(curated[0], validation_fraction=0.0), tok, tmp_path / "noval")
    with pytest.raises(ValueError, match="'val' has no tokens"):
        PackedLoader(tmp_path / "noval", 16, 1, split="val")


def test_blend_texts_skip_excluded_and_held_out_documents(curated, packed, tok):
    root, _ = curated
    texts = list(iter_blend_texts(blend_for(root, exclude={"sources": ["spam"]})))
    data = PackedData(packed)
    val = set(_documents(data, "val", "high", tok) + _documents(data, "val", "rest", tok))
    assert texts and not any(t.startswith("SPAMMARK") for t in texts) and not val & set(texts)
    assert len(list(iter_blend_texts(blend_for(root), max_docs=5))) == 5


def test_eval_batches_cover_the_split_and_shard_by_rank(packed):
    data = PackedData(packed)
    total = sum((data.stream("val", c).num_tokens - 1) // 32 for c in data.components("val"))
    everything = torch.cat([x for x, _ in iter_eval_batches(data, 32, 5)])
    assert len(everything) == total
    halves = [torch.cat([x for x, _ in iter_eval_batches(data, 32, 5, rank=r, world_size=2)]) for r in (0, 1)]
    assert len(halves[0]) == len(halves[1]) == total // 2
    assert torch.equal(halves[0][0], everything[0]) and torch.equal(halves[1][0], everything[1])


# ---------------------------------------------------------------- CLI
def test_cli_trains_a_tokenizer_and_packs_a_blend(curated, tmp_path, capsys):
    root, _ = curated
    assert cli_main(["tokenizer", "train", str(root), "--out", str(tmp_path / "tok"), "--vocab-size", "600"]) == 0
    blend = tmp_path / "blend-test.yaml"
    blend.write_text("components:\n  - {name: all, weight: 1}\nexclude: {sources: [spam]}\n"
                     "inputs: [nowhere]\n")
    assert cli_main(["tokenizer", "train", "--blend", str(blend), str(root), "--out", str(tmp_path / "tok2"),
                     "--vocab-size", "600"]) == 0
    # trained without the excluded source, the tokenizer has no merges for its marker word
    with_spam, without = (len(Tokenizer.load(tmp_path / d).encode("SPAMMARK")) for d in ("tok", "tok2"))
    assert with_spam == 1 and without > 2
    args = ["tokenize", "--blend", str(blend), "--input", str(root), "--tokenizer", str(tmp_path / "tok"),
            "--out", str(tmp_path / "packed"), "--val-fraction", "0.2"]
    assert cli_main(args) == 0
    index = json.loads((tmp_path / "packed" / "index.json").read_text())
    assert index["blend"]["validation_fraction"] == 0.2 and "spam" not in index["sources"]["train"]
    assert cli_main(args) == 2  # refuses to overwrite
    assert "overwrite" in capsys.readouterr().err
