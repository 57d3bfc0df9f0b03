"""Checkpoints that survive crashes: atomic write, checksums, a `latest` pointer, fallback to an older one.

Layout under a run's `checkpoints/` directory:

    step-00000050/  model.safetensors      model weights (full, unsharded; FQN names)
                    optimizer.safetensors  optimizer tensors, named "state/<param fqn>/<key>"
                    rng.safetensors        torch (and CUDA) RNG states
                    trainer.json           step, optimizer param groups and scalars, data-loader position,
                                           python RNG state, the resolved config, anything the loop adds
                    manifest.json          sha256 and size of every file above
    latest                                 the name of the newest complete checkpoint

A checkpoint is written into `step-N.tmp-PID/`, every file fsync'ed, the directory renamed to `step-N`,
then `latest` replaced atomically. A crash at any point leaves the previous checkpoint intact and `latest`
pointing at it. On load, the manifest is verified; a corrupt or missing checkpoint is skipped with a
warning and the next older one is used. Only safetensors and JSON are read: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def write_checkpoint(root: str | Path, step: int, tensors: dict[str, dict[str, torch.Tensor]],
                     state: dict[str, Any], keep: int = 2) -> Path:
    """Atomically write checkpoint `step` with tensor groups (one safetensors file each) and JSON `state`."""
    from safetensors.torch import save_file

    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f"{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, group in tensors.items():
        group = {k: v.detach().contiguous().cpu() for k, v in group.items()}
        save_file(group, str(tmp / f"{name}.safetensors"), metadata={"format": "pt"})
    _write_json(tmp / "trainer.json", {**state, "step": step})
    manifest = {}
    for f in sorted(tmp.iterdir()):
        _fsync_file(f)
        manifest[f.name] = {"sha256": _sha256(f), "bytes": f.stat().st_size}
    _write_json(tmp / "manifest.json", {"step": step, "files": manifest})
    _fsync_file(tmp / "manifest.json")
    _fsync_dir(tmp)
    if final.exists():  # a re-run of the same step replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    pointer = root / f"latest.tmp-{os.getpid()}"
    pointer.write_text(final.name + "\n")
    _fsync_file(pointer)
    os.replace(pointer, root / "latest")
    _fsync_dir(root)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("step-*.tmp-*"):  # leftovers of crashed writes
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def verify(ckpt: Path) -> None:
    """Raise CheckpointError unless every file listed in the manifest is present with its checksum."""
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ckpt}: unreadable manifest ({e})") from None
    for name, info in manifest.get("files", {}).items():
        f = ckpt / name
        if not f.is_file():
            raise CheckpointError(f"{ckpt}: {name} is missing")
        if f.stat().st_size != info["bytes"] or _sha256(f) != info["sha256"]:
            raise CheckpointError(f"{ckpt}: {name} fails its checksum (corrupt or truncated)")


def read_checkpoint(ckpt: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    from safetensors.torch import load_file

    verify(ckpt)
    tensors = {f.name.removesuffix(".safetensors"): load_file(str(f)) for f in sorted(ckpt.glob("*.safetensors"))}
    state = json.loads((ckpt / "trainer.json").read_text())
    return tensors, state


def load_latest(root: str | Path) -> tuple[Path, dict[str, dict[str, torch.Tensor]], dict[str, Any]] | None:
    """The newest checkpoint that verifies (the `latest` one first), or None if the run has none.

    A corrupt checkpoint is skipped with a warning; if checkpoints exist but none verifies, that is an error
    (silently restarting from scratch would throw the run away).
    """
    root = Path(root)
    candidates = list_checkpoints(root)[::-1]
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    if not candidates:
        return None
    problems = []
    for ckpt in candidates:
        try:
            tensors, state = read_checkpoint(ckpt)
        except (CheckpointError, OSError, ValueError) as e:
            problems.append(str(e))
            warnings.warn(f"skipping checkpoint {ckpt.name}: {e}; falling back to an older one", stacklevel=2)
            continue
        return ckpt, tensors, state
    raise CheckpointError(f"{root}: no usable checkpoint: " + "; ".join(problems))


# ---- the training state: model, optimizer, RNG ----------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            tensors[f"cuda{i}"] = torch.cuda.get_rng_state(i)
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def set_rng_state(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    for name, t in tensors.items():
        if name.startswith("cuda") and torch.cuda.is_available() and int(name[4:]) < torch.cuda.device_count():
            torch.cuda.set_rng_state(t, int(name[4:]))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def flatten_optimizer_state(osd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A full (FQN-keyed) optimizer state dict -> safetensors-able tensors + JSON-able rest."""
    tensors, scalars = {}, {}
    for fqn, entry in osd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{fqn}/{key}"] = value
            else:
                scalars[f"{fqn}/{key}"] = value
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for name, t in tensors.items():
        _, fqn, key = name.split("/", 2)
        state.setdefault(fqn, {})[key] = t
    for name, value in meta.get("scalars", {}).items():
        fqn, key = name.rsplit("/", 1)
        state.setdefault(fqn, {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def split_tensors(tree: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Nested dicts/lists holding tensors -> (flat tensors for safetensors, a JSON tree with references)."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}, {"__tensor__": prefix}
    if isinstance(tree, dict):
        tensors, out = {}, {}
        for k, v in tree.items():
            t, out[k] = split_tensors(v, f"{prefix}/{k}" if prefix else str(k))
            tensors.update(t)
        return tensors, out
    if isinstance(tree, (list, tuple)):
        tensors, out = {}, []
        for i, v in enumerate(tree):
            t, j = split_tensors(v, f"{prefix}/{i}")
            tensors.update(t)
            out.append(j)
        return tensors, out
    return {}, tree


def join_tensors(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `split_tensors`."""
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        return {k: join_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_tensors(v, tensors) for v in tree]
    return tree
