"""The pieces the image classifiers share (ViT, Mixer, the 2-layer MLP); call them inside a compact method.

Each creates its submodule under the name given, so parameter names stay the model's own.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_named = nn.with_logical_partitioning


def example_mask(batch: dict, n: int) -> jax.Array:
    """[B]: batch['mask'] (0 = a padded example, which never counts in the statistics), or all ones."""
    return batch.get("mask", jnp.ones((n,), jnp.float32))


def layer_norm(dtype: Any, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        dtype=dtype,
        name=name,
        scale_init=_named(nn.initializers.ones, ("embed",)),
        bias_init=_named(nn.initializers.zeros, ("embed",)),
    )


def patch_embedding(image: jax.Array, width: int, patch: int, dtype: Any, name: str) -> jax.Array:
    """Images [B, height, width, channels] -> one embedding per patch (row-major) by a strided Conv: [B, T, D]."""
    patches = nn.Conv(
        width,
        (patch, patch),
        strides=(patch, patch),
        padding="VALID",
        dtype=dtype,
        kernel_init=_named(nn.initializers.lecun_normal(), (None, None, None, "embed")),
        bias_init=_named(nn.initializers.zeros, ("embed",)),
        name=name,
    )(image.astype(dtype))  # [B, height / patch, width / patch, D]
    return patches.reshape(image.shape[0], -1, width)


def head(x_BD: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
    """The classifier `head`, zero at init: [B, D] -> logits [B, C] in float32."""
    logits_BC = nn.Dense(
        num_classes,
        dtype=dtype,
        name="head",
        kernel_init=_named(nn.initializers.zeros, ("embed", "classes")),
        bias_init=_named(nn.initializers.zeros, ("classes",)),
    )(x_BD)
    return logits_BC.astype(jnp.float32)
