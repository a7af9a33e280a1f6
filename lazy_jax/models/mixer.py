"""MLP-Mixer (Tolstikhin et al.) with ReLU MLPs; stacks `token_mlp` and `channel_mlp`.

Variant strings `<size>/<patch>` with sizes Mu (CPU-sized), S, B, L, e.g. `B/16`;
config.model.width, depth, tokens_mlp_dim and channels_mlp_dim override the size's (None = the
size's). `mixer_spec(config.model, num_classes=..., image_shape=...)` checks the config (the
patch must tile the data's images) and gives the `MixerSpec` that `Mixer` takes. In the token-mixing MLP a "token" of the activation map is one
channel's row across patches, so its statistics count rows of [B, D, F] (F = tokens_mlp_dim).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lazy_jax.models import checks, classifier
from lazy_jax.models.classifier import layer_norm
from lazy_jax.models.stack import StackSettings, layer_stack
from lazy_jax.sparsity import MlpSettings

# size: (width, depth, tokens_mlp_dim, channels_mlp_dim)
MIXER_SIZES = {
    "Mu": (128, 6, 64, 512),
    "S": (512, 8, 256, 2048),
    "B": (768, 12, 384, 3072),
    "L": (1024, 24, 512, 4096),
}
SIZE_FIELDS = ("width", "depth", "tokens_mlp_dim", "channels_mlp_dim")  # MIXER_SIZES' order; config keys


def default_model_config(variant: str = "B/16") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            name="mixer",
            variant=variant,
            **{f: ml_collections.config_dict.placeholder(int) for f in SIZE_FIELDS},  # None = the size's
            num_classes=-1,
            **checks.COMMON_DEFAULTS,  # dropout_rate: after the activation of every MLP, nowhere else
            **checks.STACK_DEFAULTS,
        )
    )


@dataclasses.dataclass(frozen=True)
class MixerSpec:
    """Resolved, validated, hashable Mixer hyper-parameters; built by `mixer_spec` only."""

    num_classes: int
    patch: int
    width: int
    depth: int
    tokens_mlp_dim: int
    channels_mlp_dim: int
    dtype: Any
    mlp: MlpSettings
    stack: StackSettings


def mixer_spec(
    config_model,
    *,
    num_classes: int | None = None,
    vocab_size: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> MixerSpec:
    """config.model of a Mixer and the data's number of classes -> its spec; checks every model value."""
    del vocab_size  # a classifier has no vocabulary
    preset, patch = checks.variant(config_model, MIXER_SIZES)
    checks.patch_fits(config_model, patch, image_shape)
    sizes = checks.sizes(config_model, SIZE_FIELDS, preset)
    widths = {f: sizes[f] for f in ("tokens_mlp_dim", "channels_mlp_dim")}  # Top-k applies to both MLPs
    return MixerSpec(
        num_classes=checks.data_size(config_model, "num_classes", num_classes, "the data's number of classes"),
        patch=patch,
        **sizes,
        dtype=checks.dtype(config_model),
        mlp=checks.mlp_settings(config_model, widths),
        stack=checks.stack_settings(config_model),
    )


class MixerLayer(nn.Module):
    spec: MixerSpec
    train: bool

    @nn.compact
    def __call__(self, x_BTD, mask_B):
        s = self.spec
        # Token mixing acts on [B, D, T]: each channel row is a "token" of this MLP.
        y_BDT = jnp.swapaxes(layer_norm(s.dtype, "ln_token")(x_BTD), 1, 2)
        mask_BD = jnp.broadcast_to(mask_B[:, None], y_BDT.shape[:2])
        # Its features are the patches: name them 'length', so 'embed' always means the width.
        token_mlp = s.mlp.block(
            s.tokens_mlp_dim, s.dtype, act_axes=("batch", "embed"), embed_axis="length", name="token_mlp"
        )
        y_BDT, token_stats = token_mlp(y_BDT, mask_BD, train=self.train)
        x_BTD = x_BTD + jnp.swapaxes(y_BDT, 1, 2)
        mask_BT = jnp.broadcast_to(mask_B[:, None], x_BTD.shape[:2])
        y_BTD, channel_stats = s.mlp.block(s.channels_mlp_dim, s.dtype, name="channel_mlp")(
            layer_norm(s.dtype, "ln_channel")(x_BTD), mask_BT, train=self.train
        )
        x_BTD = nn.with_logical_constraint(x_BTD + y_BTD, ("batch", "length", "embed"))
        return x_BTD, {"token_mlp": token_stats, "channel_mlp": channel_stats}


class Mixer(nn.Module):
    """`Mixer(mixer_spec(config.model, num_classes=...))`; `models.get_model` builds both."""

    spec: MixerSpec

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        s = self.spec
        x_BTD = classifier.patch_embedding(batch["image"], s.width, s.patch, s.dtype, name="stem")
        mask_B = classifier.example_mask(batch, x_BTD.shape[0])
        x_BTD, stats = layer_stack(
            "mixerblock", MixerLayer, dict(spec=s, train=train), s.depth, x_BTD, mask_B, settings=s.stack
        )
        x_BD = jnp.mean(layer_norm(s.dtype, "pre_head_norm")(x_BTD), axis=1)
        return classifier.head(x_BD, s.num_classes, s.dtype), stats
