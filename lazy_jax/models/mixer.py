"""MLP-Mixer (Tolstikhin et al.) with ReLU MLPs; stacks `token_mlp` and `channel_mlp`.

Variant strings `<size>/<patch>` with sizes Mu (CPU-sized), S, B, L, e.g. `B/16`;
config.model.width, depth, tokens_mlp_dim and channels_mlp_dim override the size's (None = the
size's). `mixer_spec(config.model, num_classes=...)` checks the config and gives the
`MixerSpec` that `Mixer` takes. In the token-mixing MLP a "token" of the activation map is one
channel's row across patches, so its statistics count rows of [B, D, F] (F = tokens_mlp_dim).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lazy_jax.models import checks
from lazy_jax.models.stack import layer_stack
from lazy_jax.sparsity import MlpBlock

_named = nn.with_logical_partitioning


def _layer_norm(dtype, name):
    return nn.LayerNorm(
        dtype=dtype,
        name=name,
        scale_init=_named(nn.initializers.ones, ("embed",)),
        bias_init=_named(nn.initializers.zeros, ("embed",)),
    )


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
            dtype="float32",
            activation="relu",
            topk=0,
            topk_impl="bisect",
            dropout_rate=0.0,
            scan_layers=False,
            remat_policy="none",
            neuron_freq=False,
            count_hist_bins=0,
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
    activation: str
    topk: int
    topk_impl: str
    dropout_rate: float
    scan_layers: bool
    remat_policy: str
    neuron_freq: bool
    count_hist_bins: int


def mixer_spec(config_model, *, num_classes: int | None = None, vocab_size: int | None = None) -> MixerSpec:
    """config.model of a Mixer and the data's number of classes -> its spec; checks every model value."""
    del vocab_size  # a classifier has no vocabulary
    preset, patch = checks.variant(config_model, MIXER_SIZES)
    sizes = {f: checks.size_override(config_model, f, v) for f, v in zip(SIZE_FIELDS, preset)}
    widths = {f: sizes[f] for f in ("tokens_mlp_dim", "channels_mlp_dim")}  # Top-k applies to both MLPs
    return MixerSpec(
        num_classes=checks.data_size(config_model, "num_classes", num_classes, "the data's number of classes"),
        patch=patch,
        **sizes,
        **checks.mlp_fields(config_model, widths),
        **checks.stack_fields(config_model),
    )


class MixerLayer(nn.Module):
    spec: MixerSpec
    train: bool

    @nn.compact
    def __call__(self, x_BTD, mask_B):
        s = self.spec
        mlp = lambda d_ff, **kw: MlpBlock(
            d_ff=d_ff,
            activation=s.activation,
            topk=s.topk,
            topk_impl=s.topk_impl,
            dropout_rate=s.dropout_rate,
            neuron_freq=s.neuron_freq,
            count_hist_bins=s.count_hist_bins,
            dtype=s.dtype,
            **kw,
        )
        # Token mixing acts on [B, D, T]: each channel row is a "token" of this MLP.
        y_BDT = jnp.swapaxes(_layer_norm(s.dtype, "ln_token")(x_BTD), 1, 2)
        mask_BD = jnp.broadcast_to(mask_B[:, None], y_BDT.shape[:2])
        # Its features are the patches: name them 'length', so 'embed' always means the width.
        y_BDT, token_stats = mlp(s.tokens_mlp_dim, act_axes=("batch", "embed"), embed_axis="length", name="token_mlp")(
            y_BDT, mask_BD, train=self.train
        )
        x_BTD = x_BTD + jnp.swapaxes(y_BDT, 1, 2)
        mask_BT = jnp.broadcast_to(mask_B[:, None], x_BTD.shape[:2])
        y_BTD, channel_stats = mlp(s.channels_mlp_dim, name="channel_mlp")(
            _layer_norm(s.dtype, "ln_channel")(x_BTD), mask_BT, train=self.train
        )
        x_BTD = nn.with_logical_constraint(x_BTD + y_BTD, ("batch", "length", "embed"))
        return x_BTD, {"token_mlp": token_stats, "channel_mlp": channel_stats}


class Mixer(nn.Module):
    """`Mixer(mixer_spec(config.model, num_classes=...))`; `models.get_model` builds both."""

    spec: MixerSpec

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        s = self.spec
        image = batch["image"].astype(s.dtype)  # [B, height, width, channels]
        n = image.shape[0]
        patches = nn.Conv(
            s.width,
            (s.patch, s.patch),
            strides=(s.patch, s.patch),
            padding="VALID",
            dtype=s.dtype,
            kernel_init=_named(nn.initializers.lecun_normal(), (None, None, None, "embed")),
            bias_init=_named(nn.initializers.zeros, ("embed",)),
            name="stem",
        )(image)  # [B, height / patch, width / patch, D]
        x_BTD = patches.reshape(n, -1, s.width)
        mask_B = batch.get("mask", jnp.ones((n,), jnp.float32))
        x_BTD, stats = layer_stack(
            "mixerblock",
            MixerLayer,
            dict(spec=s, train=train),
            s.depth,
            x_BTD,
            mask_B,
            scan=s.scan_layers,
            remat_policy=s.remat_policy,
        )
        x_BD = jnp.mean(_layer_norm(s.dtype, "pre_head_norm")(x_BTD), axis=1)
        logits_BC = nn.Dense(
            s.num_classes,
            dtype=s.dtype,
            name="head",
            kernel_init=_named(nn.initializers.zeros, ("embed", "classes")),
            bias_init=_named(nn.initializers.zeros, ("classes",)),
        )(x_BD)
        return logits_BC.astype(jnp.float32), stats
