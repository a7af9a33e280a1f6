"""The one stack of identical layers, as a Python loop or as one nn.scan, with optional remat.

Every model's layers go through `layer_stack`: the ViT (`encoderblock`), the Mixer
(`mixerblock`) and both T5 stacks (`layers`). Each layer is a Linen module whose
`__call__(x, *broadcast_args)` returns `(x, stats)` (stats from `MlpBlock`); the stack returns
`(x, stats stacked on a leading [L] axis)` either way, so per-layer statistics do not depend on
how the stack is compiled.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from lazy_jax.sparsity import stack_layer_stats

# Named remat policies (what the backward pass may keep instead of recomputing).
REMAT_POLICIES = {
    "none": None,  # no remat: keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_dots": jax.checkpoint_policies.checkpoint_dots,
}


@dataclasses.dataclass(frozen=True)
class StackSettings:
    """How a model compiles its layer stacks (config.model.scan_layers, remat_policy); `spec.stack`.

    Built and checked by `lazy_jax.models.checks.stack_settings` only.
    """

    scan: bool  # one nn.scan over the layers instead of a Python loop
    remat_policy: str = "none"  # a key of REMAT_POLICIES


def layer_stack(
    name: str,
    layer_cls: type[nn.Module],
    layer_kwargs: dict,
    num_layers: int,
    x: jax.Array,
    *broadcast_args,
    settings: StackSettings,
):
    """Applies `num_layers` copies of `layer_cls(**layer_kwargs)` to x; call inside a compact method.

    `broadcast_args` (masks, biases, the encoder output, a decode step; None allowed) reach
    every layer unchanged. Parameters are named `<name>_<i>` in a loop, or `<name>` with a
    leading 'layers' axis under scan; so is a 'cache' collection (T5's KV cache).
    """
    scan, remat_policy = settings.scan, settings.remat_policy
    policy = REMAT_POLICIES[remat_policy]
    cls = layer_cls if remat_policy == "none" else nn.remat(layer_cls, policy=policy, prevent_cse=not scan)
    if scan:
        scanned = nn.scan(
            cls,
            variable_axes={"params": 0, "cache": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * len(broadcast_args),
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        return scanned(**layer_kwargs, name=name)(x, *broadcast_args)
    per_layer = []
    for i in range(num_layers):
        x, stats = cls(**layer_kwargs, name=f"{name}_{i}")(x, *broadcast_args)
        per_layer.append(stats)
    return x, stack_layer_stats(per_layer)
