"""Model registry: `get_model(config.model, num_classes=..., vocab_size=...)` -> Linen module.

Each model has one frozen spec (`ViTSpec`, `MixerSpec`, `MlpSpec`, `T5Spec`) built by one
function (`vit_spec`, ...) from config.model and the data's sizes; that builder is where every
model value is checked (an `errors.InputError` naming `model.<key>`, the value and what is
allowed), and the module takes the spec: `ViT(spec)`. `model_spec` gives the spec alone, so a
caller can check a config before building anything. What every model shares is one field of its
spec: `spec.mlp` (`sparsity.MlpSettings`, which builds each `MlpBlock`) and, with a layer stack,
`spec.stack` (`stack.StackSettings`); their config keys and checks are in `models.checks`.

Sizes that come from the data (classes of a dataset, ids of a tokenizer) are arguments here,
never written back into the config: `config.model.num_classes` / `vocab_size` of -1 mean
"the data's" (the argument, which must then be given); any other value is used as given and
must be >= the argument when that is given. Each model reads the size it has (the classifiers
num_classes, T5 vocab_size) and ignores the other. `image_shape` (H, W, C) of the data's images,
when given, is checked by the patch models (ViT, Mixer: the patch must tile the image) and not
passed to the others.

Shape letters, the suffixes of tensor names here and in `lazy_jax.sparsity` (`x_BTD` is
[batch, length, d_model]; a digit is a literal size, e.g. `cls_11D`, or `w_3DHK` for q, k, v):
  B  batch
  T  length: query / token positions (image patches, the class token included; T5 decoder positions)
  S  key / source length: encoder positions seen by the decoder, the KV-cache length (S = T in
     self-attention without a cache)
  D  d_model, the width
  F  d_ff, the hidden width of an MLP (tokens_mlp_dim / channels_mlp_dim in the Mixer)
  H  attention heads
  K  head size (d_kv)
  L  layers
  V  vocabulary
  C  classes
  N  buckets: T5's relative-position buckets, the bins of the count histogram
Images are [B, height, width, channels] and carry no suffix (H and C mean heads and classes).
In the Mixer's token MLP the roles swap: its rows are channels and its features patches
(`y_BDT`, whose hidden map is [B, D, F]).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from lazy_jax.errors import InputError
from lazy_jax.models import mixer, mlp, t5, vit

# name -> (spec builder, module class that takes the spec)
MODELS: dict[str, tuple[Callable, type[nn.Module]]] = {
    "vit": (vit.vit_spec, vit.ViT),
    "mixer": (mixer.mixer_spec, mixer.Mixer),
    "mlp": (mlp.mlp_spec, mlp.TwoLayerMlp),
    "t5": (t5.t5_spec, t5.T5),
}


# The models whose spec builder takes the data's image shape (the patch must tile the image).
_TAKE_IMAGE_SHAPE = ("vit", "mixer")


def _entry(config_model) -> tuple[Callable, type[nn.Module]]:
    name = config_model["name"]
    if name not in MODELS:
        raise InputError(f"model.name={name!r} is unknown; allowed: {list(MODELS)}")
    return MODELS[name]


def model_spec(
    config_model,
    *,
    num_classes: int | None = None,
    vocab_size: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
):
    """The checked, frozen spec of the model named by config_model.name, with the data's sizes."""
    build, _ = _entry(config_model)
    sizes = {"num_classes": num_classes, "vocab_size": vocab_size}
    if config_model["name"] in _TAKE_IMAGE_SHAPE:
        sizes["image_shape"] = image_shape
    return build(config_model, **sizes)


def get_model(
    config_model,
    *,
    num_classes: int | None = None,
    vocab_size: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> nn.Module:
    """The Linen module named by config_model.name, built from its spec (see `model_spec`)."""
    _, module_cls = _entry(config_model)
    return module_cls(model_spec(config_model, num_classes=num_classes, vocab_size=vocab_size, image_shape=image_shape))
