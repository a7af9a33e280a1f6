"""Shared by the vision model and sparsity tests: tiny size overrides and random parameters.

The heads of the real models start at zero, which would make every logits comparison vacuous,
so the tests fill the parameters with random values instead.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Size overrides of config.model (on top of a 'Mu/<patch>' variant) that shrink the models to two tiny layers.
VIT_TINY = dict(width=32, num_heads=2, depth=2, d_ff=64)
MIXER_TINY = dict(width=16, depth=2, tokens_mlp_dim=8, channels_mlp_dim=48)


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
