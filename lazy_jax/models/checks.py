"""The checks the spec builders share: each raises `InputError` naming `model.<key>`, the value and what is allowed.

Only the spec builders (`vit_spec`, `mixer_spec`, `mlp_spec`, `t5_spec`) call these; the Linen
modules trust their spec. The config keys every model has are defined here too, with their
defaults (`COMMON_DEFAULTS`, `STACK_DEFAULTS`) next to the checks that read them.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from lazy_jax.errors import InputError
from lazy_jax.models.stack import REMAT_POLICIES, StackSettings
from lazy_jax.sparsity import ACTIVATIONS, MlpSettings, check_topk, check_topk_impl

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# config.model keys of every model (`dtype`, `dropout_rate`, `mlp_settings` check them).
COMMON_DEFAULTS = dict(
    dtype="float32",  # activations; parameters stay float32
    dropout_rate=0.0,
    activation="relu",  # a key of sparsity.ACTIVATIONS
    topk=0,  # Top-k per token in every MLP; 0 = dense
    topk_impl="auto",  # how the k-th largest is found: a key of sparsity.TOPK_IMPLS
    neuron_freq=False,  # per-neuron activation frequency [F] per layer
    count_hist_bins=0,  # histogram of per-token nonzero counts; 0 = off
    union_sizes="",  # eval only: share of neurons active on any of n pooled tokens, e.g. '1,2,4,8'; '' = off
)
# config.model keys of the models with a layer stack (`stack_settings` checks them).
STACK_DEFAULTS = dict(
    scan_layers=False,  # one nn.scan over the layers (params get a leading 'layers' axis)
    remat_policy="none",  # a key of models.stack.REMAT_POLICIES
)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(key: str, value) -> int:
    if not is_int(value) or value <= 0:
        raise InputError(f"model.{key}={value!r} is not allowed: use a positive integer")
    return int(value)


def size_override(config, key: str, preset: int) -> int:
    """`model.<key>` if set (a positive integer), else the preset of the variant's size."""
    value = config.get(key)
    if value is None:
        return preset
    if not is_int(value) or value <= 0:
        raise InputError(f"model.{key}={value!r} is not allowed: use a positive integer, or None for the size's")
    return int(value)


def sizes(config, fields: tuple[str, ...], preset: tuple[int, ...]) -> dict[str, int]:
    """{field: size} of a preset (a size's values in `fields` order), each overridden by `model.<field>` if set."""
    return {f: size_override(config, f, v) for f, v in zip(fields, preset)}


def boolean(config, key: str) -> bool:
    value = config[key]
    if not isinstance(value, bool):
        raise InputError(f"model.{key}={value!r} is not allowed: use True or False")
    return value


def one_of(config, key: str, allowed) -> str:
    value = config[key]
    if value not in allowed:
        raise InputError(f"model.{key}={value!r} is unknown; allowed: {sorted(allowed)}")
    return value


def dtype(config) -> Any:
    name = config["dtype"]
    if name not in DTYPES:
        raise InputError(f"model.dtype={name!r} is not allowed; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def dropout_rate(config) -> float:
    rate = config["dropout_rate"]
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
        raise InputError(f"model.dropout_rate={rate!r} is not allowed: use 0 <= rate < 1")
    return float(rate)


def union_sizes(config) -> tuple[int, ...]:
    """model.union_sizes '1,2,4' -> (1, 2, 4); '' = off. Whether the tokens suffice is checked
    against the eval batch (`train.check_union_sizes`), which the model does not know."""
    text = config.get("union_sizes", "")
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if any(not p.isdigit() or int(p) < 1 for p in parts) or len(set(parts)) != len(parts):
        raise InputError(
            f"model.union_sizes={text!r} is not allowed: use distinct positive integers, comma-separated "
            "(e.g. '1,2,4,8'), or '' for none"
        )
    return tuple(int(p) for p in parts)


def mlp_settings(config, widths: dict[str, int], *, dropout_after_activation: bool = True) -> MlpSettings:
    """The checked settings every MLP of a model shares; `widths` names each MLP width ({'d_ff': 3072}) for Top-k.

    dropout_after_activation=False: the model's MLPs have no dropout (its dropout_rate is used elsewhere).
    """
    name, narrowest = min(widths.items(), key=lambda kv: kv[1])
    check_topk(config["topk"], narrowest, key="model.topk", width_name=name)
    check_topk_impl(config["topk_impl"], key="model.topk_impl")
    bins = config["count_hist_bins"]
    if not is_int(bins) or bins < 0:
        raise InputError(f"model.count_hist_bins={bins!r} is not allowed: use an integer >= 0 (0 = off)")
    return MlpSettings(
        activation=one_of(config, "activation", ACTIVATIONS),
        topk=int(config["topk"]),
        topk_impl=config["topk_impl"],
        dropout_rate=dropout_rate(config) if dropout_after_activation else 0.0,
        neuron_freq=boolean(config, "neuron_freq"),
        count_hist_bins=int(bins),
        union_sizes=union_sizes(config),
    )


def stack_settings(config) -> StackSettings:
    """scan_layers and remat_policy of the models with a layer stack (models.stack.layer_stack)."""
    return StackSettings(
        scan=boolean(config, "scan_layers"), remat_policy=one_of(config, "remat_policy", REMAT_POLICIES)
    )


def data_size(config, key: str, given: int | None, meaning: str) -> int:
    """Resolves model.num_classes / model.vocab_size against the data's value `given`.

    -1 means the data's (which must then be given); any other value is used as given and must be
    a positive integer >= the data's, if known: labels or ids past the model's output would give
    a NaN loss at the first step, not an error.
    """
    value = config[key]
    if not is_int(value) or (value <= 0 and value != -1):
        raise InputError(f"model.{key}={value!r} is not allowed: use a positive integer or -1 (= {meaning})")
    if value == -1:
        if given is None:
            raise InputError(
                f"model.{key}=-1 means {meaning}, but no {key} of the data was given: "
                f"pass {key}= to get_model/model_spec, or set model.{key} to a positive integer"
            )
        return int(given)
    if given is not None and value < given:
        raise InputError(
            f"model.{key}={value} is less than {meaning} ({given}): use -1 (= {meaning}) or an integer >= {given}"
        )
    return int(value)


def variant(config, sizes: dict) -> tuple[tuple, int]:
    """model.variant '<size>/<patch>' of a vision model, e.g. 'B/16' -> (sizes['B'], 16)."""
    value = config["variant"]
    size, _, patch = str(value).partition("/")
    if size not in sizes or not patch.isdigit() or int(patch) <= 0:
        raise InputError(
            f"model.variant={value!r} is not allowed; use '<size>/<patch>' with size in "
            f"{list(sizes)} and a positive integer patch, e.g. '{list(sizes)[-3]}/16'"
        )
    return sizes[size], int(patch)


def patch_fits(config, patch: int, image_shape: tuple[int, ...] | None) -> None:
    """The patch of model.variant must tile the data's images [H, W, C] (None: not checked).

    A patch larger than the image gives no patch at all (a model of the class token alone, or a
    Mixer over zero tokens), and one that does not divide the image drops its last rows and
    columns (the strided conv is 'VALID'): both train without error, so both are refused here.
    """
    if image_shape is None:
        return
    if len(image_shape) != 3 or not all(is_int(d) and d > 0 for d in image_shape):
        raise InputError(
            f"image_shape={image_shape!r} is not allowed: use (height, width, channels), positive integers"
        )
    height, width, _ = image_shape
    if patch <= height and patch <= width and height % patch == 0 and width % patch == 0:
        return
    variant = str(config["variant"])
    if patch > min(height, width):
        problem = "larger than the image, so there would be no patch at all"
    else:
        problem = (
            f"not a divisor of the image's sides, so the last {height % patch} rows and {width % patch} columns "
            "of every image would be dropped"
        )
    divisors = [p for p in range(1, min(height, width) + 1) if height % p == 0 and width % p == 0]
    example = f"{variant.partition('/')[0]}/{max(d for d in divisors if d <= patch)}"
    raise InputError(
        f"model.variant={variant!r} has patch {patch}, {problem}: the data's images are {height}x{width} "
        f"(data.image_size, or the dataset's own size). Use a patch in {divisors} (e.g. variant {example!r}), "
        f"or resize the images with data.image_size set to a multiple of {patch}"
    )
