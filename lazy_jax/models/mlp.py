"""The paper's 2-layer ReLU MLP: flatten -> Dense(d_ff) -> ReLU (-> Top-k) -> Dense(classes).

It is one `MlpBlock` whose output width is the number of classes; stack `encoder`, 1 layer.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lazy_jax.models.stack import dtype_of
from lazy_jax.sparsity import MlpBlock, stack_layer_stats


def default_model_config(d_ff: int = 2048) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            name="mlp",
            d_ff=d_ff,
            num_classes=-1,
            dtype="float32",
            activation="relu",
            topk=0,
            topk_impl="bisect",
            dropout_rate=0.0,
            neuron_freq=False,
            count_hist_bins=0,
        )
    )


class TwoLayerMlp(nn.Module):
    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        cfg = self.config
        if cfg.d_ff <= 0:
            raise ValueError(f"d_ff={cfg.d_ff!r} must be a positive integer")
        dtype = dtype_of(cfg.dtype)
        image = batch["image"]
        n = image.shape[0]
        x_B1D = image.reshape(n, 1, -1).astype(dtype)  # one "token" per example
        mask_B1 = batch.get("mask", jnp.ones((n,), jnp.float32))[:, None]
        logits_B1C, stats = MlpBlock(
            d_ff=cfg.d_ff,
            activation=cfg.activation,
            topk=cfg.topk,
            topk_impl=cfg.topk_impl,
            dropout_rate=cfg.dropout_rate,
            neuron_freq=cfg.neuron_freq,
            count_hist_bins=cfg.count_hist_bins,
            out_features=cfg.num_classes,
            dtype=dtype,
            name="mlp",
        )(x_B1D, mask_B1, train=train)
        return logits_B1C[:, 0].astype(jnp.float32), {"encoder": stack_layer_stats([stats])}
