"""Hugging Face T5 v1.0 (ReLU) checkpoints -> lazy_jax T5 parameters.

`load_hf_t5(source, config=None, **model_overrides)` -> (model config, params), where source is
a local directory (config.json + model.safetensors / pytorch_model.bin, or their sharded
*.index.json) or a state dict {HF name: numpy array / torch tensor / jax array} given with its
T5Config (a dict, or an object with `to_dict()`). `params` is the plain (unboxed) tree of
float32 numpy arrays for `{'params': params}`; `model_overrides` set fields of the returned
model config (e.g. scan_layers=True, dtype='bfloat16', topk=64).

The conversion is checked: every HF tensor is used exactly once (tied copies of the shared
embedding, e.g. lm_head.weight, must equal it), every lazy_jax parameter is filled, and every
shape is compared before anything is placed. safetensors are read without the safetensors
package; pytorch_model.bin needs torch.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from lazy_jax.errors import InputError
from lazy_jax.models.t5 import DIM_FIELDS, T5, T5_SIZES, default_model_config, t5_dims, t5_spec

SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
TIED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")


# ----------------------------------------------------------------------------- reading files
def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Reads a .safetensors file into numpy arrays (8-byte header size, JSON header, raw data)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype_name = info["dtype"]
        if dtype_name == "BF16":
            import ml_dtypes  # ships with jax

            dtype = ml_dtypes.bfloat16
        elif dtype_name in SAFETENSORS_DTYPES:
            dtype = SAFETENSORS_DTYPES[dtype_name]
        else:
            raise InputError(
                f"{path}: tensor {name!r} has dtype {dtype_name!r}; readable: {sorted([*SAFETENSORS_DTYPES, 'BF16'])}"
            )
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"])
    return out


def _read_torch_bin(path: str) -> dict[str, Any]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{path} is a PyTorch pickle and reading it needs torch, which is not installed; "
            "install torch, or save the checkpoint as model.safetensors "
            "(save_pretrained(..., safe_serialization=True))"
        ) from e
    return torch.load(path, map_location="cpu", weights_only=True)


def read_hf_directory(path: str) -> tuple[dict, dict[str, Any]]:
    """-> (config.json as a dict, state dict) of a local Hugging Face model directory."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path!r} has no config.json; expected a Hugging Face T5 model directory")
    with open(config_path) as f:
        hf_config = json.load(f)
    readers: list[tuple[str, Callable[[str], dict]]] = [
        ("model.safetensors", read_safetensors),
        ("pytorch_model.bin", _read_torch_bin),
    ]
    for filename, reader in readers:
        single, index = os.path.join(path, filename), os.path.join(path, filename + ".index.json")
        if os.path.isfile(single):
            return hf_config, dict(reader(single))
        if os.path.isfile(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state: dict[str, Any] = {}
            for shard in shards:
                state.update(reader(os.path.join(path, shard)))
            return hf_config, state
    raise FileNotFoundError(
        f"{path!r} has no weights: expected one of model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json"
    )


# ----------------------------------------------------------------------------- config
def model_config_from_hf(hf_config: Mapping[str, Any] | Any, **model_overrides) -> ml_collections.ConfigDict:
    """A T5Config(-like dict) of a T5 v1.0 ReLU model -> lazy_jax config.model; other T5s are refused."""
    hf = dict(hf_config.to_dict() if hasattr(hf_config, "to_dict") else hf_config)
    model_type = hf.get("model_type", "t5")
    if model_type != "t5":
        raise InputError(f"HF model_type={model_type!r} is not supported; only 't5' (T5 v1.0) is")
    proj = hf.get("feed_forward_proj", "relu")
    if proj != "relu" or hf.get("is_gated_act", False):
        raise InputError(
            f"HF feed_forward_proj={proj!r} is not T5 v1.0: only 'relu' (no gating) is supported "
            "(T5 v1.1 / Flan-T5 / mT5 use 'gated-gelu')"
        )
    if hf.get("tie_word_embeddings") is False or hf.get("scale_decoder_outputs") is False:
        raise InputError(
            "HF config has untied output embeddings (tie_word_embeddings=False): "
            "not T5 v1.0, which ties them and scales the decoder output by d_model**-0.5"
        )
    missing = [k for k in ("vocab_size", "d_model", "d_ff", "num_heads", "num_layers") if k not in hf]
    if missing:
        raise InputError(f"HF T5 config lacks {missing}; got keys {sorted(hf)}")
    dims = dict(
        d_model=hf["d_model"],
        num_heads=hf["num_heads"],
        num_encoder_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        d_ff=hf["d_ff"],
        d_kv=hf.get("d_kv", 64),
    )
    preset = next((name for name, sizes in T5_SIZES.items() if sizes == tuple(dims[f] for f in DIM_FIELDS)), None)
    config = default_model_config(preset or "custom")
    if preset is None:
        config.update(dims)
    config.vocab_size = int(hf["vocab_size"])
    config.relative_attention_num_buckets = int(hf.get("relative_attention_num_buckets", 32))
    config.relative_attention_max_distance = int(hf.get("relative_attention_max_distance", 128))
    config.layer_norm_epsilon = float(hf.get("layer_norm_epsilon", 1e-6))
    config.dropout_rate = float(hf.get("dropout_rate", 0.1))
    config.update(model_overrides)
    return config


# ----------------------------------------------------------------------------- tensors
def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; .float() first since numpy has no bfloat16 for torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


# How an HF tensor becomes ours (HF Linear weights are [out, in]), and the HF shape ours implies.
_LAYOUTS: dict[str, tuple[Callable, Callable]] = {
    "same": (lambda w, s: w, lambda s: s),
    "linear": (lambda w, s: w.T, lambda s: (s[1], s[0])),  # [in,out] <- [out,in]
    "qkv": (lambda w, s: w.T.reshape(s), lambda s: (s[1] * s[2], s[0])),  # [D,H,K] <- [H*K,D]
    "out": (lambda w, s: w.T.reshape(s), lambda s: (s[2], s[0] * s[1])),  # [H,K,D] <- [D,H*K]
}


def _hf_name_map(num_encoder_layers: int, num_decoder_layers: int) -> dict[tuple[str, ...], tuple[str, str]]:
    """Our (unscanned) param path -> (HF tensor name, layout)."""
    m: dict[tuple[str, ...], tuple[str, str]] = {("token_embedder", "embedding"): ("shared.weight", "same")}
    attn = lambda ours, hf: {
        (*ours, w): (f"{hf}.{x}.weight", lay)
        for w, x, lay in (("query", "q", "qkv"), ("key", "k", "qkv"), ("value", "v", "qkv"), ("out", "o", "out"))
    }
    mlp = lambda ours, hf: {
        (*ours, "mlp", "wi", "kernel"): (f"{hf}.DenseReluDense.wi.weight", "linear"),
        (*ours, "mlp", "wo", "kernel"): (f"{hf}.DenseReluDense.wo.weight", "linear"),
    }
    norm = lambda ours, hf: {(*ours, "scale"): (f"{hf}.layer_norm.weight", "same")}
    for stack, n in (("encoder", num_encoder_layers), ("decoder", num_decoder_layers)):
        m[(stack, "relpos_bias", "rel_embedding")] = (
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "same",
        )
        m[(stack, f"{stack}_norm", "scale")] = (f"{stack}.final_layer_norm.weight", "same")
        for i in range(n):
            ours, hf = (stack, f"layers_{i}"), f"{stack}.block.{i}.layer"
            if stack == "encoder":
                m.update(norm((*ours, "pre_attention_layer_norm"), f"{hf}.0"))
                m.update(attn((*ours, "attention"), f"{hf}.0.SelfAttention"))
                m.update(norm((*ours, "pre_mlp_layer_norm"), f"{hf}.1"))
                m.update(mlp(ours, f"{hf}.1"))
            else:
                m.update(norm((*ours, "pre_self_attention_layer_norm"), f"{hf}.0"))
                m.update(attn((*ours, "self_attention"), f"{hf}.0.SelfAttention"))
                m.update(norm((*ours, "pre_cross_attention_layer_norm"), f"{hf}.1"))
                m.update(attn((*ours, "encoder_decoder_attention"), f"{hf}.1.EncDecAttention"))
                m.update(norm((*ours, "pre_mlp_layer_norm"), f"{hf}.2"))
                m.update(mlp(ours, f"{hf}.2"))
    return m


def _param_shapes(config) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Our parameter paths and shapes, from an abstract init (nothing is materialised)."""
    model = T5(t5_spec(config))
    one = np.zeros((1, 1), np.int32)
    batch = dict(encoder_input_tokens=one, decoder_input_tokens=one, decoder_target_tokens=one)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), batch))
    params = abstract["params"]
    flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: hasattr(x, "unbox"))[0]
    return {
        tuple(k.key for k in path): tuple((leaf.unbox() if hasattr(leaf, "unbox") else leaf).shape)
        for path, leaf in flat
    }


def convert_state_dict(state_dict: Mapping[str, Any], config) -> dict:
    """HF T5 v1.0 state dict -> our params tree for `config` (a lazy_jax config.model), checked."""
    unscanned = ml_collections.ConfigDict(config.to_dict())
    unscanned.scan_layers = False
    expected = _param_shapes(unscanned)
    dims = t5_dims(unscanned)
    name_map = _hf_name_map(dims["num_encoder_layers"], dims["num_decoder_layers"])
    if set(name_map) != set(expected):
        raise AssertionError(
            f"name map and model disagree: only in map {sorted(set(name_map) - set(expected))}, "
            f"only in model {sorted(set(expected) - set(name_map))}"
        )
    missing = sorted(hf for hf, _ in name_map.values() if hf not in state_dict)
    if missing:
        raise InputError(
            f"HF state dict lacks {len(missing)} tensor(s) the model needs: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}"
        )
    used: set[str] = set()
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for path, (hf_name, layout) in name_map.items():
        transform, hf_shape_of = _LAYOUTS[layout]
        want_hf, ours = hf_shape_of(expected[path]), expected[path]
        w = _to_numpy(state_dict[hf_name])
        if tuple(w.shape) != tuple(want_hf):
            raise InputError(
                f"HF tensor {hf_name!r} has shape {tuple(w.shape)} but {'/'.join(path)} {ours} needs {tuple(want_hf)}"
            )
        flat[path] = np.ascontiguousarray(transform(w, ours), dtype=np.float32)
        used.add(hf_name)
    shared = flat[("token_embedder", "embedding")]
    for alias in TIED_ALIASES:
        if alias in state_dict:
            w = _to_numpy(state_dict[alias])
            if w.shape != shared.shape or not np.array_equal(w, shared):
                raise InputError(
                    f"HF tensor {alias!r} differs from shared.weight: the embeddings are not tied, "
                    "so this is not a T5 v1.0 checkpoint"
                )
            used.add(alias)
    unused = sorted(set(state_dict) - used)
    if unused:
        raise InputError(
            f"HF state dict has {len(unused)} tensor(s) this T5 v1.0 model does not use: "
            f"{unused[:10]}{' ...' if len(unused) > 10 else ''}"
        )
    params: dict = {}
    for path, w in flat.items():
        node = params
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = w
    if config.scan_layers:
        params = _scan_params(params)
        got = {tuple(k.key for k in p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
        want = _param_shapes(config)
        if got != want:
            raise AssertionError(f"scanned params disagree with the scanned model: {sorted(set(got) ^ set(want))}")
    return params


def _scan_params(params: dict) -> dict:
    """{stack: {layers_<i>: tree}} -> {stack: {layers: tree stacked on a leading [L] axis}} (nn.scan)."""
    out = {}
    for stack, tree in params.items():
        layer_keys = sorted((k for k in tree if k.startswith("layers_")), key=lambda k: int(k.split("_")[1]))
        if not layer_keys:
            out[stack] = tree
            continue
        rest = {k: v for k, v in tree.items() if not k.startswith("layers_")}
        rest["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *[tree[k] for k in layer_keys])
        out[stack] = rest
    return out


def load_hf_t5(
    path_or_state_dict: str | os.PathLike | Mapping[str, Any], config: Any = None, **model_overrides
) -> tuple[ml_collections.ConfigDict, dict]:
    """-> (lazy_jax config.model, params) of a Hugging Face T5 v1.0 (ReLU) model.

    path_or_state_dict: a local HF model directory, or a state dict {name: array/tensor}.
    config: the HF T5Config (or its dict); required with a state dict, overrides config.json.
    model_overrides: fields of the returned config.model (scan_layers, dtype, topk, ...).
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        file_config, state_dict = read_hf_directory(os.fspath(path_or_state_dict))
        config = file_config if config is None else config
    elif isinstance(path_or_state_dict, Mapping):
        if config is None:
            raise ValueError("load_hf_t5 with a state dict needs its HF T5Config (or dict) as `config`")
        state_dict = path_or_state_dict
    else:
        raise TypeError(f"load_hf_t5 takes a directory path or a state dict, not {type(path_or_state_dict).__name__}")
    model_config = model_config_from_hf(config, **model_overrides)
    return model_config, convert_state_dict(state_dict, model_config)
