"""Vision Transformer (Dosovitskiy et al.) with the paper's ReLU MLPs.

Variant strings `<size>/<patch>`: sizes Ti, S, B, L, H (widths/heads/depths/d_ff below) and Mu,
a 128-wide 6-layer model for CPU runs; e.g. `B/16`, `S/4`, `Mu/4`. config.model.width,
num_heads, depth and d_ff override the size's (None = the size's), e.g. `--config.model.d_ff=1024`.
`vit_spec(config.model, num_classes=...)` checks the config and gives the `ViTSpec` that `ViT`
takes. `apply(variables, batch, train=...)` takes {'image' [B, height, width, channels],
optional 'mask' [B]} and returns (logits [B, C] f32, {'encoder': per-layer statistics}).
Statistics count every token, the class token included; padded examples (mask 0) never count.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lazy_jax.errors import InputError
from lazy_jax.models import checks
from lazy_jax.models.attention import SelfAttention
from lazy_jax.models.stack import layer_stack
from lazy_jax.sparsity import MlpBlock

# size: (width, num_heads, depth, d_ff)
VIT_SIZES = {
    "Mu": (128, 4, 6, 512),
    "Ti": (192, 3, 12, 768),
    "S": (384, 6, 12, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 16, 24, 4096),
    "H": (1280, 16, 32, 5120),
}
SIZE_FIELDS = ("width", "num_heads", "depth", "d_ff")  # VIT_SIZES' order; config keys that override it


def default_model_config(variant: str = "B/16") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            name="vit",
            variant=variant,
            **{f: ml_collections.config_dict.placeholder(int) for f in SIZE_FIELDS},  # None = the size's
            pool="cls",  # 'cls' (class token) or 'gap' (mean over patches)
            num_classes=-1,  # -1: from the dataset
            dtype="float32",  # activations; parameters stay float32
            activation="relu",
            topk=0,  # Top-k per token in every MLP; 0 = dense
            topk_impl="bisect",  # how the k-th largest is found: 'bisect' or 'lax' (jax.lax.top_k)
            dropout_rate=0.0,
            scan_layers=False,
            remat_policy="none",
            neuron_freq=False,  # per-neuron activation frequency [F] per layer
            count_hist_bins=0,  # histogram of per-token nonzero counts; 0 = off
        )
    )


@dataclasses.dataclass(frozen=True)
class ViTSpec:
    """Resolved, validated, hashable ViT hyper-parameters; built by `vit_spec` only."""

    num_classes: int
    patch: int
    width: int
    num_heads: int
    depth: int
    d_ff: int
    pool: str
    dtype: Any
    activation: str
    topk: int
    topk_impl: str
    dropout_rate: float
    scan_layers: bool
    remat_policy: str
    neuron_freq: bool
    count_hist_bins: int


def vit_spec(config_model, *, num_classes: int | None = None, vocab_size: int | None = None) -> ViTSpec:
    """config.model of a ViT and the data's number of classes -> its spec; checks every model value."""
    del vocab_size  # a classifier has no vocabulary
    preset, patch = checks.variant(config_model, VIT_SIZES)
    sizes = {f: checks.size_override(config_model, f, v) for f, v in zip(SIZE_FIELDS, preset)}
    if sizes["width"] % sizes["num_heads"]:
        raise InputError(
            f"model.num_heads={sizes['num_heads']} is not allowed: it must divide the width {sizes['width']} "
            f"(model.width, or the size of variant {config_model['variant']!r})"
        )
    return ViTSpec(
        num_classes=checks.data_size(config_model, "num_classes", num_classes, "the data's number of classes"),
        patch=patch,
        **sizes,
        pool=checks.one_of(config_model, "pool", ("cls", "gap")),
        **checks.mlp_fields(config_model, {"d_ff": sizes["d_ff"]}),
        **checks.stack_fields(config_model),
    )


def _layer_norm(dtype, name):
    return nn.LayerNorm(
        dtype=dtype,
        name=name,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
    )


class EncoderLayer(nn.Module):
    """Pre-LN Transformer layer: x + MHSA(LN(x)); x + MLP(LN(x))."""

    spec: ViTSpec
    train: bool

    @nn.compact
    def __call__(self, x_BTD, mask_BT):
        s = self.spec
        y_BTD = SelfAttention(
            s.num_heads, dtype=s.dtype, dropout_rate=s.dropout_rate, deterministic=not self.train, name="attention"
        )(_layer_norm(s.dtype, "ln_attention")(x_BTD))
        x_BTD = x_BTD + nn.Dropout(s.dropout_rate)(y_BTD, deterministic=not self.train)
        x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))
        # The ViT's only dropout is on the residual branches and in attention, none after the activation.
        y_BTD, stats = MlpBlock(
            d_ff=s.d_ff,
            activation=s.activation,
            topk=s.topk,
            topk_impl=s.topk_impl,
            use_bias=True,
            neuron_freq=s.neuron_freq,
            count_hist_bins=s.count_hist_bins,
            dtype=s.dtype,
            name="mlp",
        )(_layer_norm(s.dtype, "ln_mlp")(x_BTD), mask_BT, train=self.train)
        x_BTD = x_BTD + nn.Dropout(s.dropout_rate)(y_BTD, deterministic=not self.train)
        return nn.with_logical_constraint(x_BTD, ("batch", "length", "embed")), stats


class ViT(nn.Module):
    """`ViT(vit_spec(config.model, num_classes=...))`; `models.get_model` builds both."""

    spec: ViTSpec

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
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, None, None, "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="embedding",
        )(image)  # [B, height / patch, width / patch, D]
        x_BTD = patches.reshape(n, -1, s.width)
        if s.pool == "cls":
            cls_11D = self.param(
                "cls", nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")), (1, 1, s.width)
            )
            x_BTD = jnp.concatenate([jnp.broadcast_to(cls_11D, (n, 1, s.width)).astype(s.dtype), x_BTD], axis=1)
        posemb_1TD = self.param(
            "pos_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "length", "embed")),
            (1, x_BTD.shape[1], s.width),
        )
        x_BTD = x_BTD + posemb_1TD.astype(s.dtype)
        x_BTD = nn.Dropout(s.dropout_rate)(x_BTD, deterministic=not train)
        x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))

        example_mask_B = batch.get("mask", jnp.ones((n,), jnp.float32))
        mask_BT = jnp.broadcast_to(example_mask_B[:, None], x_BTD.shape[:2])
        x_BTD, stats = layer_stack(
            "encoderblock",
            EncoderLayer,
            dict(spec=s, train=train),
            s.depth,
            x_BTD,
            mask_BT,
            scan=s.scan_layers,
            remat_policy=s.remat_policy,
        )
        x_BTD = _layer_norm(s.dtype, "encoder_norm")(x_BTD)
        x_BD = x_BTD[:, 0] if s.pool == "cls" else jnp.mean(x_BTD, axis=1)
        logits_BC = nn.Dense(
            s.num_classes,
            dtype=s.dtype,
            name="head",
            kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "classes")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("classes",)),
        )(x_BD)
        return logits_BC.astype(jnp.float32), {"encoder": stats}
