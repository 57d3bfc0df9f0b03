"""The Hugging Face Nemotron-H format, both ways: config.json + (sharded) safetensors, never pickle.

Writes what `transformers.NemotronHForCausalLM` (>=5.15) and vLLM read: `model_type: nemotron_h`,
every width explicit (`mamba_num_heads`, `mamba_head_dim`, `head_dim`: "expand" is ignored by HF),
`backbone.*` tensor names, MoE experts one tensor per expert, and `lm_head.weight` always (HF ignores
`tie_word_embeddings` and would initialise a missing head at random). Reads the same, plus the names
`transformers` or NVIDIA's remote code write (`model.*`, `backbone.embedding.weight`, stacked experts).
Nemotron 3 Super's additions travel as published: `moe_latent_size` with `mixer.fc1/fc2_latent_proj`, and the
MTP head as `num_nextn_predict_layers` + `mtp_hybrid_override_pattern` with `mtp.layers.*` tensors (transformers
reads the former and drops the latter; a directory it saved has the MTP fields but no `mtp.*`, and loads here
without the head, with a warning).

A model folder is untrusted input. config.json is size-capped and every size in it bounded (HybridConfig)
before anything is allocated; the files it reads (config.json, the shard index, the shards it names) must
resolve inside the model folder: no absolute names, no `..`, no symlink out (except a Hugging Face cache
snapshot's links into its own `blobs/`). A refused name gets the same error whether or not its target exists.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path, PurePosixPath

import torch

from hytron.config import ConfigError, read_json_file
from hytron.model.config import MAX_MTP_PATTERN, HybridConfig
from hytron.model.moe import cast_keeping_router_fp32

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
MAX_JSON_BYTES = 4 * 2**20  # config.json and the shard index: real ones are a few KB

_KIND_OF_TYPE = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*",
                 "mlp": "-", "moe": "E"}
_TYPE_OF_KIND = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}
# HF field name -> HybridConfig field, for fields whose names differ (legacy hub spellings included)
_RENAMES = {"layer_norm_epsilon": "norm_eps", "mamba_n_groups": "n_groups", "mamba_d_conv": "conv_kernel",
            "mamba_chunk_size": "chunk_size", "mamba_dt_min": "time_step_min", "mamba_dt_max": "time_step_max",
            "mamba_dt_init_floor": "time_step_floor", "mamba_conv_bias": "use_conv_bias",
            "num_local_experts": "n_routed_experts", "mtp_hybrid_override_pattern": "mtp_pattern"}
# HF fields that must hold these values for hytron's implementation to be exact
_REQUIRED = {"mlp_hidden_act": "relu2", "mamba_hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
             "use_bias": False, "mamba_proj_bias": False, "tie_word_embeddings": False}
# HF fields we read but do not keep
_IGNORED = {"architectures", "model_type", "num_hidden_layers", "layers_block_type", "layer_types",
            "hybrid_override_pattern", "expand", "mamba_expand", "time_step_limit", "mamba_dt_limit",
            "transformers_version", "torch_dtype", "dtype", "use_cache", "use_mamba_kernels",
            "residual_in_fp32", "rescale_prenorm_residual", "attention_dropout", "hidden_dropout",
            "sliding_window", "mamba_ssm_cache_dtype", "auto_map", "num_logits_to_keep", "mtp_layers_block_type",
            "_name_or_path", "output_attentions", "output_hidden_states",
            "return_dict", "initializer_range_scale"}


# ---- config ------------------------------------------------------------------------------------------
def config_to_hf(c: HybridConfig, dtype: torch.dtype = torch.float32) -> dict:
    out = {
        "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h",
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "hybrid_override_pattern": c.pattern, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim, "intermediate_size": c.intermediate_size, "mlp_hidden_act": "relu2",
        "mamba_num_heads": c.mamba_num_heads, "mamba_head_dim": c.mamba_head_dim,
        "ssm_state_size": c.ssm_state_size, "n_groups": c.n_groups, "conv_kernel": c.conv_kernel,
        "chunk_size": c.chunk_size, "use_conv_bias": c.use_conv_bias, "mamba_hidden_act": "silu",
        # hytron never clamps dt at run time; HF clamps prefill (not decode) at time_step_min, so a
        # negligible value keeps both paths identical (shared/research/hybrid-arch.md §2.6)
        "time_step_min": 1e-9, "time_step_max": c.time_step_max, "time_step_floor": c.time_step_floor,
        "layer_norm_epsilon": c.norm_eps, "initializer_range": c.initializer_range,
        "max_position_embeddings": c.max_position_embeddings, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "use_bias": False, "mamba_proj_bias": False,
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "hytron": {"preset": c.name, "time_step_min": c.time_step_min},
    }
    if "E" in c.pattern + c.mtp_pattern:  # MoE fields only for MoE models: converters (llama.cpp's) take them
        out.update({                        # to mean MoE
            "n_routed_experts": c.n_routed_experts, "num_experts_per_tok": c.num_experts_per_tok,
            "moe_intermediate_size": c.moe_intermediate_size,
            "moe_shared_expert_intermediate_size": c.moe_shared_expert_intermediate_size,
            "n_shared_experts": c.n_shared_experts, "routed_scaling_factor": c.routed_scaling_factor,
            "norm_topk_prob": c.norm_topk_prob, "n_group": c.n_group, "topk_group": c.topk_group,
        })
        if c.moe_latent_size is not None:
            out["moe_latent_size"] = c.moe_latent_size
    if c.num_nextn_predict_layers:  # the published spelling (a string); transformers turns it into its list
        out.update({"num_nextn_predict_layers": c.num_nextn_predict_layers,
                    "mtp_hybrid_override_pattern": c.mtp_pattern})
    out.update({k: v for k, v in c.extra.items() if k not in out})
    return out


def config_from_hf(data: dict, source: str = "config.json") -> HybridConfig:
    """A HybridConfig from a Nemotron-H config.json dict; unsupported settings are refused by name."""
    if data.get("model_type") not in ("nemotron_h", None):
        raise ConfigError(f"{source}: model_type is {data.get('model_type')!r}, expected 'nemotron_h'")
    if data.get("hybrid_override_pattern"):
        pattern = data["hybrid_override_pattern"]
    elif data.get("layers_block_type") or data.get("layer_types"):
        types = data.get("layers_block_type") or data.get("layer_types")
        unknown = sorted(set(types) - set(_KIND_OF_TYPE))
        if unknown:
            raise ConfigError(f"{source}: layers_block_type has unknown layer types {unknown}")
        pattern = "".join(_KIND_OF_TYPE[t] for t in types)
    else:
        raise ConfigError(f"{source}: needs hybrid_override_pattern or layers_block_type")
    for key, want in _REQUIRED.items():
        if key in data and data[key] != want:
            raise ConfigError(f"{source}: {key}={data[key]!r} is not supported by hytron (needs {want!r})")
    mtp_pattern = _mtp_pattern(data, source) if data.get("num_nextn_predict_layers") else ""
    fields = {f for f in HybridConfig.__dataclass_fields__ if f not in ("pattern", "name", "extra")}
    kwargs: dict = {"pattern": pattern, "mtp_pattern": mtp_pattern}
    extra = {}
    for key, value in data.items():
        name = _RENAMES.get(key, key)
        if name == "mtp_pattern":
            continue
        if name in fields:
            kwargs[name] = value
        elif key == "hytron" and isinstance(value, dict):
            kwargs["name"] = value.get("preset", "") or ""
            if "time_step_min" in value:
                kwargs["time_step_min"] = value["time_step_min"]
        elif key not in _IGNORED and key not in _REQUIRED:
            extra[key] = value
    if "E" not in pattern + mtp_pattern:  # MoE fields are meaningless without MoE blocks: keep hytron's defaults
        for k in ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
                  "moe_shared_expert_intermediate_size", "moe_latent_size"):
            kwargs.pop(k, None)
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(kwargs.get(k), list):
            kwargs[k] = kwargs[k][0]
        if kwargs.get(k) is None:
            kwargs.pop(k, None)
    kwargs["extra"] = extra
    from hytron.config import from_dict

    return from_dict(HybridConfig, kwargs, where=source)


def _mtp_pattern(data: dict, source: str) -> str:
    """The MTP module's block kinds, read as transformers does: `mtp_layers_block_type` (a list) unless it is
    missing or the default ["full_attention", "moe"] while `mtp_hybrid_override_pattern` (the published string)
    is given; neither -> transformers' default "*E"."""
    types, text = data.get("mtp_layers_block_type"), data.get("mtp_hybrid_override_pattern")
    if text is not None and (not types or types == ["full_attention", "moe"]):
        if not isinstance(text, str):
            raise ConfigError(f"{source}: mtp_hybrid_override_pattern must be a string like '*E', got {text!r}")
        return text
    if types is None:
        return "*E"
    if not isinstance(types, list) or len(types) > MAX_MTP_PATTERN:
        raise ConfigError(f"{source}: mtp_layers_block_type must be a list of at most {MAX_MTP_PATTERN} layer types")
    unknown = sorted({str(t) for t in types} - set(_KIND_OF_TYPE))
    if unknown:
        raise ConfigError(f"{source}: mtp_layers_block_type has unknown layer types {unknown}")
    return "".join(_KIND_OF_TYPE[t] for t in types)


# ---- weights -----------------------------------------------------------------------------------------
def _to_disk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """hytron names -> hub names: 3-D expert tensors are split into one tensor per expert."""
    out = {}
    for name, t in state.items():
        m = re.fullmatch(r"(.*\.mixer\.experts)\.(up_proj|down_proj)", name)
        if m:
            for j in range(t.size(0)):
                out[f"{m[1]}.{j}.{m[2]}.weight"] = t[j]
        else:
            out[name] = t
    return out


def _from_disk(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hub or transformers names -> hytron names (prefix, singular embedding, per-expert stacking)."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("model."):
            name = "backbone." + name[len("model."):]
        if name == "backbone.embedding.weight":
            name = "backbone.embeddings.weight"
        m = re.fullmatch(r"(.*\.mixer\.experts)\.(\d+)\.(up_proj|down_proj)\.weight", name)
        if m:
            experts.setdefault(f"{m[1]}.{m[3]}", {})[int(m[2])] = t
            continue
        out[name] = t
    for name, parts in experts.items():
        n = max(parts) + 1
        missing = sorted(set(range(n)) - set(parts))
        if missing:
            raise ValueError(f"checkpoint is missing expert tensors {name.rsplit('.', 1)[0]}.{missing}")
        out[name] = torch.stack([parts[j] for j in range(n)])
    return out


def save_pretrained(model, path, tokenizer=None, max_shard_bytes: int = 2 * 1024**3,
                    dtype: torch.dtype | None = None) -> Path:
    """Write config.json and safetensors (sharded with an index above `max_shard_bytes`): a transformers
    `NemotronHForCausalLM` checkpoint. vLLM's CPU build serves the dense ones (README "Serve it with vLLM";
    its MoE path is CUDA-only, and vLLM on a GPU is not checked here)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    state = cast_keeping_router_fp32(state, dtype) if dtype is not None else state
    state = {k: v.contiguous().cpu() for k, v in _to_disk(state).items()}
    for stale in [*path.glob("model*.safetensors"), path / INDEX_NAME]:
        if stale.exists():
            stale.unlink()
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        nbytes = state[name].numel() * state[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = state[name]
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(path / WEIGHTS_NAME), metadata=meta)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path / fname), metadata=meta)
            weight_map.update({k: fname for k in shard})
        total = sum(v.numel() * v.element_size() for v in state.values())
        (path / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total},
                                                   "weight_map": weight_map}, indent=2, sort_keys=True))
    wdtype = dtype or next(iter(model.parameters())).dtype
    (path / CONFIG_NAME).write_text(json.dumps(config_to_hf(model.config, wdtype), indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(path)
    return path


def _refuse_pickles(path: Path) -> None:
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(f"{path}: holds only pickle weight files ({', '.join(pickles)}); hytron loads "
                         "safetensors only, because unpickling can run arbitrary code. Convert them with a "
                         "trusted tool to safetensors first.")


def _allowed_roots(folder: Path) -> list[str]:
    """Real paths files of `folder` may resolve into: the folder, and for a Hugging Face cache snapshot
    (`models--ORG--NAME/snapshots/REV`, whose files are symlinks to `../../blobs/SHA`) that repo's blobs/."""
    absolute = Path(os.path.abspath(folder))
    roots = [os.path.realpath(absolute)]
    if absolute.parent.name == "snapshots" and absolute.parent.parent.name.startswith("models--"):
        roots.append(os.path.realpath(absolute.parent.parent / "blobs"))
    return roots


def confined(folder: Path, name: object, what: str) -> Path:
    """The real path of file `name` of model folder `folder`, refused (ValueError) unless it is a relative name
    without `..` that resolves, symlinks followed, inside the folder. The check is on names and real paths only,
    never on existence, so the error is the same whether or not an outside target exists."""
    shown = repr(name)[:200]
    refusal = ValueError(f"{folder}: {what} {shown} is not a file inside the model folder (shard and config names "
                         "must be relative, without '..', and must not link outside it)")
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise refusal
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise refusal
    real = os.path.realpath(folder / pure)
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in _allowed_roots(folder)):
        raise refusal
    return Path(real)


def _read_small_json(path: Path, what: str, error: type[ValueError] = ValueError):
    """The JSON in `path` (already confined), refused unread when over MAX_JSON_BYTES."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise error(f"{path}: {what} of {size} bytes, over the {MAX_JSON_BYTES}-byte limit")
    return read_json_file(path, f"{path}: missing", error)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a model directory: single file or an index of shards; errors name the bad file. Every
    file read is confined to the folder (`confined`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files: list[tuple[str, Path]]  # (name as given, real path)
    if (path / INDEX_NAME).is_file() or (path / INDEX_NAME).is_symlink():  # a dangling link is refused alike
        index_file = confined(path, INDEX_NAME, "shard index")
        try:
            index = _read_small_json(index_file, "shard index")
            names = sorted(set(index["weight_map"].values()))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path / INDEX_NAME}: malformed shard index ({type(e).__name__}: {e})") from None
        files = [(n, confined(path, n, "shard")) for n in names]  # every name checked before any is read
    elif (path / WEIGHTS_NAME).is_file() or (path / WEIGHTS_NAME).is_symlink():
        files = [(WEIGHTS_NAME, confined(path, WEIGHTS_NAME, "weights file"))]
    else:
        names = sorted(f.name for f in path.glob("*.safetensors"))
        if not names:
            _refuse_pickles(path)
            raise FileNotFoundError(f"{path}: no safetensors weights found (model.safetensors or an index)")
        files = [(n, confined(path, n, "weights file")) for n in names]
    tensors: dict[str, torch.Tensor] = {}
    for name, f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{path / name}: listed in the shard index but missing")
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"{path / name}: not a valid safetensors file (truncated or corrupt?): {e}") from None
    return tensors


def load_config(path: str | Path) -> HybridConfig:
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not (cfg_file.is_file() or cfg_file.is_symlink()):
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; is this a Nemotron-H model directory?")
    real = confined(path, CONFIG_NAME, "config file")
    if not real.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; is this a Nemotron-H model directory?")
    data = _read_small_json(real, CONFIG_NAME, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_file}: must hold a JSON object, got {type(data).__name__}")
    return config_from_hf(data, source=str(cfg_file))


def load_pretrained(cls, path, device=None, dtype: torch.dtype | None = None):
    """Build the model from config.json on the meta device (validated first), then load the weights."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    config = load_config(path)
    tensors = _from_disk(read_safetensors(path))
    if config.num_nextn_predict_layers and not any(k.startswith("mtp.") for k in tensors):
        # transformers' NemotronHForCausalLM drops `mtp.*` on load, so what it saves keeps the MTP config fields
        # but no MTP weights: load the main model, say so, and forget the head rather than invent it
        warnings.warn(f"{path}: config.json has num_nextn_predict_layers={config.num_nextn_predict_layers} but "
                      "the checkpoint holds no mtp.* tensors (transformers drops them when it saves); loading "
                      "without the MTP head", stacklevel=3)
        config = config.replace(num_nextn_predict_layers=0, mtp_pattern="")
    with torch.device("meta"):
        model = cls(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise ValueError(f"{path}: checkpoint lacks tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        raise ValueError(f"{path}: checkpoint has tensors this config does not use: {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise ValueError(f"{path}: tensor {name} has shape {tuple(tensors[name].shape)}, the config "
                             f"needs {tuple(ref.shape)}")
    if dtype is None and torch.device(device or "cpu").type == "cpu":
        # bf16/fp16 checkpoints compute in fp32 on CPU by default (CPU half-precision matmuls are slow and
        # lossy); pass dtype= to keep them. On a GPU they load as stored.
        dtype = torch.float32
    tensors = cast_keeping_router_fp32(tensors, dtype)  # dtype None: as stored, the router fp32 all the same
    model.load_state_dict(tensors, assign=True)
    return model.to(device) if device is not None else model
