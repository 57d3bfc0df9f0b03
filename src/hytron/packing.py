"""Packed token data: curated JSONL -> binary token shards per blend component, and the resumable loader.

On disk (`hytron tokenize --blend FILE --tokenizer DIR --out DIR`):

    OUT/index.json                      format, dtype, special ids, blend, weights, per split/component
                                        shards (path, num_tokens, num_docs), docs and tokens per source
                                        and per quality bucket, skip counts by reason, warnings
    OUT/tokenizer/                      a copy of the tokenizer the ids belong to
    OUT/{train,val}/COMPONENT-00000.bin flat token ids (uint16 when vocab <= 65536, else uint32);
                                        each document is `<s> tokens </s>`, documents back to back
    OUT/{train,val}/COMPONENT-00000.docs.npy   int64 start offset of every document in the shard

Packing is deterministic: inputs are read in sorted path order, a document joins the first blend component
it matches, and the validation hold-out is decided by a hash of (blend seed, document id), so adding or
removing other documents never moves a document between splits.

`PackedLoader` yields `(inputs, targets)` int64 tensors of shape (batch, seq_len). Training is an infinite
stream of *samples* g = 0, 1, 2, ...; sample g's component is drawn from the blend weights by a generator
seeded with (seed, g // 1024), and the k-th sample of a component is window k of a seeded permutation of
that component's non-overlapping (seq_len + 1)-token windows (a fresh permutation and alignment offset per
epoch of the component). Every batch is therefore a pure function of (seed, weights, seq_len, sample index),
which gives:

- exact resume: `state_dict()` is the next sample index plus per-component counters (a few integers);
- rank sharding: a step consumes `batch_size * world_size` consecutive samples and rank r takes the r-th
  slice of `batch_size`, so ranks are disjoint and the *global* batch is identical for any world size with
  the same `batch_size * world_size`; the state is identical on every rank, so a checkpoint taken at one
  world size resumes at another (same global batch);
- gradient accumulation is invisible to the data: k micro-batches of b samples are the same samples as one
  batch of k * b.

Windows cross document boundaries (documents are separated by `</s> <s>`), as in GPT-style pre-training.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hytron.data.io import open_text
from hytron.data.mix import Blend

FORMAT = "hytron-packed-v1"
SPLITS = ("train", "val")
_BLOCK = 1024  # samples whose components are drawn by one generator
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")  # in a folder; a file given by name may be any


# ---------------------------------------------------------------- reading curated documents
@dataclass
class ReadStats:
    """What the reader skipped, by reason (nothing is dropped silently)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


def jsonl_files(path: str | Path) -> list[Path]:
    """The JSONL files of an input: a file, a folder of shards, a curation output dir (reads its kept/) or
    a TinyWeb dir (reads its corpus/ only: labels, reference and evaluation sets must never be trained on)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input not found: {path}")
    if (path / "kept").is_dir():  # a `hytron curate --out DIR` directory
        path = path / "kept"
    elif (path / "tinyweb.json").is_file():  # a raw `hytron tinyweb --out DIR` directory
        path = path / "corpus"
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(JSONL_SUFFIXES)
                   and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))  # no temp dirs
    if not files:
        raise FileNotFoundError(f"no JSONL files ({', '.join(JSONL_SUFFIXES)}) under {path}")
    return files


def read_documents(path: str | Path, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Documents of one input as dicts with `text`, `id`, `source`, `quality_bucket` (filled when absent).

    A missing `source` becomes the input's name (the folder or file stem) so a user's own folders can be
    blended by name; a missing `id` becomes `FILE:LINE`. Bad lines are counted in `stats`, not raised.
    """
    stats = stats if stats is not None else ReadStats()
    root = Path(path)
    default_source = root.name.split(".")[0] if root.is_file() else root.name
    for file in jsonl_files(root):
        with open_text(file) as handle:
            line_no = 0
            while True:
                try:
                    line = handle.readline()
                except UnicodeDecodeError:
                    stats.add("bad_utf8")
                    break  # the decoder cannot resynchronise inside a compressed stream
                if not line:
                    break
                line_no += 1
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    stats.add("invalid_json")
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    stats.add("missing_text")
                    continue
                if not record["text"]:
                    stats.add("empty_text")
                    continue
                bucket = record.get("quality_bucket")
                if bucket is None and isinstance(record.get("meta"), dict):  # curation may nest it
                    bucket = record["meta"].get("quality_bucket")
                if bucket is not None and (isinstance(bucket, bool) or not isinstance(bucket, int)):
                    stats.add("bad_quality_bucket")
                    continue
                record.setdefault("source", default_source)
                record["source"] = str(record["source"])
                if record.get("id") is None:
                    record["id"] = f"{file.name}:{line_no}"
                record["id"] = str(record["id"])
                record["quality_bucket"] = bucket
                yield record


def iter_texts(paths: Iterable[str | Path], max_docs: int | None = None) -> Iterator[str]:
    """Just the texts of inputs (for tokenizer training), in sorted file order."""
    n = 0
    for p in paths:
        for record in read_documents(p):
            if max_docs is not None and n >= max_docs:
                return
            n += 1
            yield record["text"]


def iter_blend_texts(blend: Blend, max_docs: int | None = None) -> Iterator[str]:
    """Texts of the documents a blend trains on (routed to a component, not excluded, not held out)."""
    n = 0
    for input_path in blend.input_paths():
        for record in read_documents(input_path):
            if blend.route(record["source"], record["quality_bucket"], record["id"], input_path) is None:
                continue
            if is_validation(record["id"], blend.seed, blend.validation_fraction):
                continue
            if max_docs is not None and n >= max_docs:
                return
            n += 1
            yield record["text"]


def is_validation(doc_id: str, seed: int, fraction: float) -> bool:
    """Deterministic hold-out decision for one document, independent of every other document."""
    if fraction <= 0:
        return False
    h = hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < fraction


# ---------------------------------------------------------------- writing shards
def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class _ShardWriter:
    """Streams documents of one (split, component) into numbered shard files."""

    def __init__(self, root: Path, split: str, component: str, dtype: np.dtype, shard_tokens: int):
        self.root, self.split, self.component = root, split, component
        self.dtype, self.shard_tokens = dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._file = None
        self._offsets: list[int] = []
        self._tokens = 0
        self.num_tokens = self.num_docs = self.num_bytes = 0

    def write(self, ids: list[int], num_bytes: int) -> None:
        if self._file is None:
            name = f"{self.split}/{self.component}-{len(self.shards):05d}"
            (self.root / self.split).mkdir(parents=True, exist_ok=True)
            self._file = (self.root / f"{name}.bin").open("wb")
            self._name, self._offsets, self._tokens = name, [], 0
        self._offsets.append(self._tokens)
        np.asarray(ids, dtype=self.dtype).tofile(self._file)
        self._tokens += len(ids)
        self.num_tokens += len(ids)
        self.num_docs += 1
        self.num_bytes += num_bytes
        if self._tokens >= self.shard_tokens:
            self.close()

    def close(self) -> None:
        if self._file is None:
            return
        self._file.close()
        np.save(self.root / f"{self._name}.docs.npy", np.asarray(self._offsets, dtype=np.int64))
        self.shards.append({"path": f"{self._name}.bin", "component": self.component, "num_tokens": self._tokens,
                            "num_docs": len(self._offsets), "doc_offsets": f"{self._name}.docs.npy"})
        self._file = None


def pack(blend: Blend, tokenizer: Any, out_dir: str | Path, *, shard_tokens: int = 1 << 26,
         batch_docs: int = 256, overwrite: bool = False,
         progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Tokenize the blend's documents into `out_dir`; returns (and writes) the index.

    `tokenizer` is a `hytron.tokenizer.Tokenizer` (anything with `encode_batch`, `bos_id`, `eos_id`,
    `vocab_size`, `save`). `progress(docs_read, tokens_written)` is called after every batch.
    """
    out_dir = Path(out_dir)
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    if (out_dir / "index.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already holds packed data; pass overwrite=True (--overwrite) to replace")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "index.json").exists():
        raise FileExistsError(f"{out_dir} exists and is not a packed-data dir; choose an empty or new --out")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    dtype = token_dtype(tokenizer.vocab_size)
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    # what a document starts with: BOS (or what the tokenizer's post-processor adds; EOS without any BOS)
    prefix = tokenizer.document_prefix() if hasattr(tokenizer, "document_prefix") else [bos]
    suffix = [eos] if eos is not None else []
    writers = {(s, c.name): _ShardWriter(tmp, s, c.name, dtype, shard_tokens)
               for s in SPLITS for c in blend.components}
    per_source: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}
    per_bucket: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}  # bucket as str ("none")
    stats = ReadStats()
    docs_read = tokens_written = 0
    pending: list[tuple[str, str, str]] = []  # (split, component, text) of documents not yet tokenized
    pending_meta: list[tuple[str, str]] = []  # their (source, quality bucket)

    def flush() -> None:
        nonlocal tokens_written
        if not pending:
            return
        encoded = tokenizer.encode_batch([t for _, _, t in pending])
        for (split, comp, text), (source, bucket), ids in zip(pending, pending_meta, encoded):
            doc = [*prefix, *ids, *suffix]
            writers[split, comp].write(doc, len(text.encode("utf-8")))
            for table, key in ((per_source, source), (per_bucket, bucket)):
                row = table[split].setdefault(key, {"docs": 0, "tokens": 0})
                row["docs"] += 1
                row["tokens"] += len(doc)
            tokens_written += len(doc)
        pending.clear()
        pending_meta.clear()
        if progress is not None:
            progress(docs_read, tokens_written)

    for input_path in blend.input_paths():
        for record in read_documents(input_path, stats):
            docs_read += 1
            comp = blend.route(record["source"], record["quality_bucket"], record["id"], input_path)
            if comp is None:
                excluded = blend.exclude.matches(record["source"], record["quality_bucket"], record["id"])
                stats.add("excluded" if excluded else "unmatched")
                continue
            split = "val" if is_validation(record["id"], blend.seed, blend.validation_fraction) else "train"
            pending.append((split, comp, record["text"]))
            bucket = record["quality_bucket"]
            pending_meta.append((record["source"], "none" if bucket is None else str(bucket)))
            if len(pending) >= batch_docs:
                flush()
    flush()
    for w in writers.values():
        w.close()

    warnings = []
    splits: dict[str, Any] = {}
    for s in SPLITS:
        comps = {}
        for c in blend.components:
            w = writers[s, c.name]
            comps[c.name] = {"num_tokens": w.num_tokens, "num_docs": w.num_docs, "num_bytes": w.num_bytes,
                             "shards": w.shards}
        splits[s] = {"num_tokens": sum(v["num_tokens"] for v in comps.values()),
                     "num_docs": sum(v["num_docs"] for v in comps.values()),
                     "num_bytes": sum(v["num_bytes"] for v in comps.values()), "components": comps}
    empty = [c.name for c in blend.components if splits["train"]["components"][c.name]["num_docs"] == 0]
    for name in empty:
        warnings.append(f"component {name!r} selected no training documents; its weight is dropped")
    kept = {c.name: c.weight for c in blend.components if c.name not in empty}
    if not kept:
        shutil.rmtree(tmp)
        raise ValueError(f"blend {blend.name!r} selected no training documents from {blend.input_paths()} "
                         f"(skipped: {stats.counts})")
    total = sum(kept.values())
    tokenizer.save(tmp / "tokenizer")
    index = {
        "format": FORMAT, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size,
        "bos_id": bos, "eos_id": eos, "pad_id": getattr(tokenizer, "pad_id", None),
        "tokenizer_sha256": hashlib.sha256((tmp / "tokenizer" / "tokenizer.json").read_bytes()).hexdigest(),
        "blend": blend.to_dict(), "weights": {k: v / total for k, v in kept.items()},
        "splits": splits, "sources": per_source, "buckets": per_bucket, "skipped": stats.counts,
        "warnings": warnings,
    }
    (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)  # only reached for an existing packed-data dir with overwrite=True
    tmp.rename(out_dir)
    for message in warnings:
        print(f"warning: {message}", file=sys.stderr)
    return index


# ---------------------------------------------------------------- reading shards
class _Stream:
    """One component of one split as a single virtual token array over its memory-mapped shards."""

    def __init__(self, root: Path, shards: list[dict[str, Any]], dtype: np.dtype):
        self.maps = [np.memmap(root / s["path"], dtype=dtype, mode="r") for s in shards if s["num_tokens"]]
        sizes = [len(m) for m in self.maps]
        self.starts = np.cumsum([0, *sizes])  # shard i covers [starts[i], starts[i+1])
        self.num_tokens = int(self.starts[-1])

    def read(self, start: int, length: int, out: np.ndarray) -> None:
        """Copy tokens [start, start + length) into `out` (which may be int64)."""
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        pos, filled = start - int(self.starts[i]), 0
        while filled < length:
            chunk = self.maps[i][pos:pos + length - filled]
            out[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
            i, pos = i + 1, 0


class PackedData:
    """An opened packed-data directory: its index and one token stream per (split, component)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        path = self.dir / "index.json"
        if not path.is_file():
            raise FileNotFoundError(f"no index.json in {self.dir} (create it with `hytron tokenize`)")
        self.index = json.loads(path.read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{path}: format {self.index.get('format')!r}, expected {FORMAT!r}")
        self.dtype = np.dtype(self.index["dtype"])
        self._streams: dict[tuple[str, str], _Stream] = {}

    def components(self, split: str) -> list[str]:
        if split not in self.index["splits"]:
            raise ValueError(f"split must be one of {list(self.index['splits'])}, got {split!r}")
        return [c for c, v in self.index["splits"][split]["components"].items() if v["num_tokens"]]

    def stream(self, split: str, component: str) -> _Stream:
        key = (split, component)
        if key not in self._streams:
            if component not in self.components(split):
                raise ValueError(f"split {split!r} has no tokens for component {component!r}; "
                                 f"non-empty components: {self.components(split)}")
            shards = self.index["splits"][split]["components"][component]["shards"]
            self._streams[key] = _Stream(self.dir, shards, self.dtype)
        return self._streams[key]

    def tokens(self, split: str, component: str) -> np.ndarray:
        """All tokens of a component (a copy; for tests and inspection of small data)."""
        s = self.stream(split, component)
        out = np.empty(s.num_tokens, dtype=np.int64)
        s.read(0, s.num_tokens, out)
        return out


class PackedLoader:
    """Blended, seeded, rank-sharded, exactly resumable batches of (inputs, targets), shape (batch, seq_len)."""

    def __init__(self, data_dir: str | Path | PackedData, seq_len: int, batch_size: int, *, seed: int = 0,
                 split: str = "train", weights: dict[str, float] | None = None, rank: int = 0,
                 world_size: int = 1):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len}, {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.data = data_dir if isinstance(data_dir, PackedData) else PackedData(data_dir)
        self.seq_len, self.batch_size, self.seed, self.split = seq_len, batch_size, seed, split
        self.rank, self.world_size = rank, world_size
        available = self.data.components(split)
        if not available:
            raise ValueError(f"{self.data.dir}: split {split!r} has no tokens"
                             + (" (packed with validation_fraction 0?)" if split == "val" else ""))
        if weights is None:
            weights = {c: w for c, w in self.data.index["weights"].items() if c in available} if split == "train" \
                else dict.fromkeys(available, 1.0)
        unknown = sorted(set(weights) - set(available))
        if unknown:
            raise ValueError(f"weights: component(s) {unknown} have no {split} tokens; available: {available}")
        weights = {c: float(w) for c, w in sorted(weights.items()) if w > 0}
        if not weights:
            raise ValueError("weights: at least one component needs a positive weight")
        total = sum(weights.values())
        self.weights = {c: w / total for c, w in weights.items()}
        self.names = list(self.weights)
        self._p = np.array([self.weights[c] for c in self.names])
        self._streams = [self.data.stream(split, c) for c in self.names]
        self._windows = []  # non-overlapping (seq_len + 1)-token windows per component and epoch
        for c, s in zip(self.names, self._streams):
            n = (s.num_tokens - 1) // seq_len
            if n < 1:
                raise ValueError(f"component {c!r} has {s.num_tokens} {split} tokens, fewer than seq_len + 1 = "
                                 f"{seq_len + 1}; lower seq_len or give it more data")
            self._windows.append(n)
        self._salts = [zlib.crc32(c.encode()) for c in self.names]
        self._epoch_cache: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
        self._block_cache: tuple[int, np.ndarray] | None = None
        self.next_sample = 0
        self.counts = np.zeros(len(self.names), dtype=np.int64)

    # ---- the deterministic sample stream ----
    def _components_of(self, first: int, n: int) -> np.ndarray:
        """Component index of samples first .. first + n - 1."""
        out = np.empty(n, dtype=np.int64)
        g = first
        while g < first + n:
            block = g // _BLOCK
            if self._block_cache is None or self._block_cache[0] != block:
                rng = np.random.default_rng([self.seed, 0xB1E4D, block])
                self._block_cache = (block, rng.choice(len(self.names), size=_BLOCK, p=self._p))
            lo = g - block * _BLOCK
            take = min(_BLOCK - lo, first + n - g)
            out[g - first:g - first + take] = self._block_cache[1][lo:lo + take]
            g += take
        return out

    def _window_start(self, comp: int, k: int) -> int:
        """Token offset of the k-th sample drawn from component `comp`."""
        n = self._windows[comp]
        epoch, j = divmod(k, n)
        key = (comp, epoch)
        if key not in self._epoch_cache:
            rng = np.random.default_rng([self.seed, self._salts[comp], epoch])
            order = rng.permutation(n)
            slack = self._streams[comp].num_tokens - 1 - n * self.seq_len
            offset = int(rng.integers(0, slack + 1))
            self._epoch_cache = {k2: v for k2, v in self._epoch_cache.items() if k2[0] != comp}
            self._epoch_cache[key] = (order, offset)
        order, offset = self._epoch_cache[key]
        return offset + int(order[j]) * self.seq_len

    def next_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """The next (inputs, targets) as int64 numpy arrays, and advance the position."""
        b, L = self.batch_size, self.seq_len
        total = b * self.world_size
        comps = self._components_of(self.next_sample, total)
        ks = np.empty(total, dtype=np.int64)
        for c in range(len(self.names)):  # the k of each sample: running count within its component
            hits = np.flatnonzero(comps == c)
            ks[hits] = self.counts[c] + np.arange(len(hits))
            self.counts[c] += len(hits)
        self.next_sample += total
        window = np.empty(L + 1, dtype=np.int64)
        inputs = np.empty((b, L), dtype=np.int64)
        targets = np.empty((b, L), dtype=np.int64)
        for i, g in enumerate(range(self.rank * b, (self.rank + 1) * b)):
            c = int(comps[g])
            self._streams[c].read(self._window_start(c, int(ks[g])), L + 1, window)
            inputs[i] = window[:-1]
            targets[i] = window[1:]
        return inputs, targets

    def __iter__(self) -> PackedLoader:
        return self

    def __next__(self):
        import torch

        inputs, targets = self.next_numpy()
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    # ---- resumable position ----
    def state_dict(self) -> dict[str, Any]:
        """The position (plain ints/strs/floats; JSON-serialisable). Identical on every rank."""
        return {"format": "hytron-loader-v1", "next_sample": int(self.next_sample),
                "counts": {c: int(n) for c, n in zip(self.names, self.counts)},
                "seed": self.seed, "seq_len": self.seq_len, "split": self.split, "weights": dict(self.weights)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; it may come from a run with another world size or per-rank batch size."""
        for key in ("seed", "seq_len", "split"):
            if state.get(key) != getattr(self, key):
                raise ValueError(f"loader state {key}={state.get(key)!r} does not match this loader's "
                                 f"{key}={getattr(self, key)!r}; the resumed batches would differ")
        saved = state.get("weights", {})
        if set(saved) != set(self.weights) or any(abs(saved[c] - self.weights[c]) > 1e-12 for c in saved):
            raise ValueError(f"loader state weights {saved} do not match this loader's {self.weights}")
        self.next_sample = int(state["next_sample"])
        self.counts = np.array([int(state["counts"][c]) for c in self.names], dtype=np.int64)


def iter_eval_batches(data_dir: str | Path | PackedData, seq_len: int, batch_size: int, *, split: str = "val",
                      rank: int = 0, world_size: int = 1, max_batches: int | None = None):
    """Every non-overlapping window of a split, in a fixed order, as (inputs, targets) torch int64 batches.

    Components are taken in name order. Windows are dealt round-robin to ranks and cut to an equal count per
    rank (so an all-reduce of per-rank sums is well defined); the last batch may be smaller than `batch_size`.
    """
    import torch

    data = data_dir if isinstance(data_dir, PackedData) else PackedData(data_dir)
    windows = []
    for c in sorted(data.components(split)):
        s = data.stream(split, c)
        windows += [(s, i * seq_len) for i in range((s.num_tokens - 1) // seq_len)]
    per_rank = len(windows) // world_size
    mine = windows[rank::world_size][:per_rank]
    buf = np.empty(seq_len + 1, dtype=np.int64)
    for n, first in enumerate(range(0, len(mine), batch_size)):
        if max_batches is not None and n >= max_batches:
            return
        chunk = mine[first:first + batch_size]
        inputs = np.empty((len(chunk), seq_len), dtype=np.int64)
        targets = np.empty((len(chunk), seq_len), dtype=np.int64)
        for i, (s, start) in enumerate(chunk):
            s.read(start, seq_len + 1, buf)
            inputs[i], targets[i] = buf[:-1], buf[1:]
        yield torch.from_numpy(inputs), torch.from_numpy(targets)
