"""The paper's 2-layer ReLU MLP: flatten -> Dense(d_ff) -> ReLU (-> Top-k) -> Dense(classes).

It is one `MlpBlock` whose output width is the number of classes; stack `encoder`, 1 layer.
`mlp_spec(config.model, num_classes=...)` checks the config and gives the `MlpSpec` that
`TwoLayerMlp` takes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lazy_jax.models import checks
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


@dataclasses.dataclass(frozen=True)
class MlpSpec:
    """Resolved, validated, hashable hyper-parameters of the 2-layer MLP; built by `mlp_spec` only."""

    num_classes: int
    d_ff: int
    dtype: Any
    activation: str
    topk: int
    topk_impl: str
    dropout_rate: float
    neuron_freq: bool
    count_hist_bins: int


def mlp_spec(config_model, *, num_classes: int | None = None, vocab_size: int | None = None) -> MlpSpec:
    """config.model of the 2-layer MLP and the data's number of classes -> its spec; checks every model value."""
    del vocab_size  # a classifier has no vocabulary
    d_ff = checks.positive_int("d_ff", config_model["d_ff"])
    return MlpSpec(
        num_classes=checks.data_size(config_model, "num_classes", num_classes, "the data's number of classes"),
        d_ff=d_ff,
        **checks.mlp_fields(config_model, {"d_ff": d_ff}),
    )


class TwoLayerMlp(nn.Module):
    """`TwoLayerMlp(mlp_spec(config.model, num_classes=...))`; `models.get_model` builds both."""

    spec: MlpSpec

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        s = self.spec
        image = batch["image"]
        n = image.shape[0]
        x_B1D = image.reshape(n, 1, -1).astype(s.dtype)  # one "token" per example
        mask_B1 = batch.get("mask", jnp.ones((n,), jnp.float32))[:, None]
        logits_B1C, stats = MlpBlock(
            d_ff=s.d_ff,
            activation=s.activation,
            topk=s.topk,
            topk_impl=s.topk_impl,
            dropout_rate=s.dropout_rate,
            neuron_freq=s.neuron_freq,
            count_hist_bins=s.count_hist_bins,
            out_features=s.num_classes,
            dtype=s.dtype,
            name="mlp",
        )(x_B1D, mask_B1, train=train)
        return logits_B1C[:, 0].astype(jnp.float32), {"encoder": stack_layer_stats([stats])}
