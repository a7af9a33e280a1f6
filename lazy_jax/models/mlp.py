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

from lazy_jax.models import checks, classifier
from lazy_jax.sparsity import MlpSettings, stack_layer_stats


def default_model_config(d_ff: int = 2048) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            name="mlp",
            d_ff=d_ff,
            num_classes=-1,
            **checks.COMMON_DEFAULTS,
        )
    )


@dataclasses.dataclass(frozen=True)
class MlpSpec:
    """Resolved, validated, hashable hyper-parameters of the 2-layer MLP; built by `mlp_spec` only."""

    num_classes: int
    d_ff: int
    dtype: Any
    mlp: MlpSettings


def mlp_spec(config_model, *, num_classes: int | None = None, vocab_size: int | None = None) -> MlpSpec:
    """config.model of the 2-layer MLP and the data's number of classes -> its spec; checks every model value."""
    del vocab_size  # a classifier has no vocabulary
    d_ff = checks.positive_int("d_ff", config_model["d_ff"])
    return MlpSpec(
        num_classes=checks.data_size(config_model, "num_classes", num_classes, "the data's number of classes"),
        d_ff=d_ff,
        dtype=checks.dtype(config_model),
        mlp=checks.mlp_settings(config_model, {"d_ff": d_ff}),
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
        mask_B1 = classifier.example_mask(batch, n)[:, None]
        logits_B1C, stats = s.mlp.block(s.d_ff, s.dtype, out_features=s.num_classes, name="mlp")(
            x_B1D, mask_B1, train=train
        )
        return logits_B1C[:, 0].astype(jnp.float32), {"encoder": stack_layer_stats([stats])}
