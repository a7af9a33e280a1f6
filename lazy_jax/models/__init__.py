"""Model registry: `get_model(config.model, num_classes=..., vocab_size=...)` -> Linen module.

Sizes that come from the data (classes of a dataset, ids of a tokenizer) are arguments here,
never written back into the config: `config.model.num_classes` / `vocab_size` of -1 mean
"the data's", any other value is used as given (and must cover the data).
"""

from __future__ import annotations

import ml_collections


def _resolved(config_model, num_classes: int | None, vocab_size: int | None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config_model.to_dict() if hasattr(config_model, "to_dict") else dict(config_model))
    if "num_classes" in c and c.num_classes == -1 and num_classes is not None:
        c.num_classes = int(num_classes)
    if "vocab_size" in c and c.vocab_size == -1 and vocab_size is not None:
        c.vocab_size = int(vocab_size)
    return c


def get_model(config_model, *, num_classes: int | None = None, vocab_size: int | None = None):
    """Builds the model named by config_model.name, with the data's sizes as arguments."""
    config_model = _resolved(config_model, num_classes, vocab_size)
    name = config_model.name
    if name == "vit":
        from lazy_jax.models.vit import ViT

        return ViT(config_model)
    if name == "mixer":
        from lazy_jax.models.mixer import Mixer

        return Mixer(config_model)
    if name == "mlp":
        from lazy_jax.models.mlp import TwoLayerMlp

        return TwoLayerMlp(config_model)
    if name == "t5":
        from lazy_jax.models.t5 import T5

        return T5(config_model)
    raise ValueError(f"model name={name!r} is unknown; allowed: ['vit', 'mixer', 'mlp', 't5']")
