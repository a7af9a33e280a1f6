"""Model registry: config.model.name -> Linen module class."""

from __future__ import annotations


def get_model(config_model):
    """Builds the model named by config.model.name."""
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
