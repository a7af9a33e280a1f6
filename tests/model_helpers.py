"""Shared by the vision model and sparsity tests: tiny test sizes and random parameters.

The heads of the real models start at zero, which would make every logits comparison vacuous,
so the tests fill the parameters with random values instead.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

VIT_TINY = (32, 2, 2, 64)  # width, heads, depth, d_ff
MIXER_TINY = (16, 2, 8, 48)  # hidden, depth, tokens_mlp_dim, channels_mlp_dim


def random_variables(model: nn.Module, batch, seed: int = 0):
    """{'params': ...} of `model` filled with random values that keep activations O(1)."""
    abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), batch)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(path[-1].key)
        if name == "scale":  # LayerNorm scales near 1
            x = 1.0 + 0.1 * rng.standard_normal(leaf.shape)
        elif leaf.ndim <= 1 or name.endswith("bias"):
            x = 0.1 * rng.standard_normal(leaf.shape)
        else:
            x = 0.5 * rng.standard_normal(leaf.shape) / np.sqrt(leaf.shape[-2])
        return jnp.asarray(x, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, nn.meta.unbox(abstract))
