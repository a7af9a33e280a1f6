"""MLP-Mixer (Tolstikhin et al.) with ReLU MLPs; stacks `token_mlp` and `channel_mlp`.

Variant strings `<size>/<patch>` with sizes Mu (CPU-sized), S, B, L, e.g. `B/16`.
In the token-mixing MLP a "token" of the activation map is one channel's row across patches,
so its statistics count rows of [B, channels, tokens_mlp_dim].
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lazy_jax.models.stack import dtype_of, layer_stack
from lazy_jax.models.vit import parse_variant
from lazy_jax.sparsity import MlpBlock

_named = nn.with_logical_partitioning


def _layer_norm(dtype, name):
    return nn.LayerNorm(
        dtype=dtype,
        name=name,
        scale_init=_named(nn.initializers.ones, ("embed",)),
        bias_init=_named(nn.initializers.zeros, ("embed",)),
    )


# size: (hidden, depth, tokens_mlp_dim, channels_mlp_dim)
MIXER_SIZES = {
    "Mu": (128, 6, 64, 512),
    "S": (512, 8, 256, 2048),
    "B": (768, 12, 384, 3072),
    "L": (1024, 24, 512, 4096),
}


def default_model_config(variant: str = "B/16") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            name="mixer",
            variant=variant,
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


class MixerLayer(nn.Module):
    tokens_mlp: dict
    channels_mlp: dict
    deterministic: bool
    dtype: object

    @nn.compact
    def __call__(self, x_BTD, mask_B):
        ln = lambda name: _layer_norm(self.dtype, name)
        train = not self.deterministic
        # Token mixing acts on [B, D, T]: each channel row is a "token" of this MLP.
        y_BDT = jnp.swapaxes(ln("ln_token")(x_BTD), 1, 2)
        mask_BD = jnp.broadcast_to(mask_B[:, None], y_BDT.shape[:2])
        # Its features are the patches: name them 'length', so 'embed' always means the width.
        y_BDT, token_stats = MlpBlock(
            **self.tokens_mlp, dtype=self.dtype, act_axes=("batch", "embed"), embed_axis="length", name="token_mlp"
        )(y_BDT, mask_BD, train=train)
        x_BTD = x_BTD + jnp.swapaxes(y_BDT, 1, 2)
        mask_BT = jnp.broadcast_to(mask_B[:, None], x_BTD.shape[:2])
        y_BTD, channel_stats = MlpBlock(**self.channels_mlp, dtype=self.dtype, name="channel_mlp")(
            ln("ln_channel")(x_BTD), mask_BT, train=train
        )
        x_BTD = nn.with_logical_constraint(x_BTD + y_BTD, ("batch", "length", "embed"))
        return x_BTD, {"token_mlp": token_stats, "channel_mlp": channel_stats}


class Mixer(nn.Module):
    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        cfg = self.config
        (hidden, depth, d_tok, d_ch), patch = parse_variant(cfg.variant, MIXER_SIZES)
        dtype = dtype_of(cfg.dtype)
        image_BHWC = batch["image"].astype(dtype)
        n = image_BHWC.shape[0]
        x_BhwD = nn.Conv(
            hidden,
            (patch, patch),
            strides=(patch, patch),
            padding="VALID",
            dtype=dtype,
            kernel_init=_named(nn.initializers.lecun_normal(), (None, None, None, "embed")),
            bias_init=_named(nn.initializers.zeros, ("embed",)),
            name="stem",
        )(image_BHWC)
        x_BTD = x_BhwD.reshape(n, -1, hidden)
        mask_B = batch.get("mask", jnp.ones((n,), jnp.float32))
        common = dict(
            activation=cfg.activation,
            topk=cfg.topk,
            topk_impl=cfg.topk_impl,
            dropout_rate=cfg.dropout_rate,
            neuron_freq=cfg.neuron_freq,
            count_hist_bins=cfg.count_hist_bins,
        )
        layer = dict(
            tokens_mlp=dict(d_ff=d_tok, **common),
            channels_mlp=dict(d_ff=d_ch, **common),
            deterministic=not train,
            dtype=dtype,
        )
        x_BTD, stats = layer_stack(
            "mixerblock", MixerLayer, layer, depth, x_BTD, mask_B, scan=cfg.scan_layers, remat_policy=cfg.remat_policy
        )
        x_BD = jnp.mean(_layer_norm(dtype, "pre_head_norm")(x_BTD), axis=1)
        logits_BC = nn.Dense(
            cfg.num_classes,
            dtype=dtype,
            name="head",
            kernel_init=_named(nn.initializers.zeros, ("embed", "classes")),
            bias_init=_named(nn.initializers.zeros, ("classes",)),
        )(x_BD)
        return logits_BC.astype(jnp.float32), stats
