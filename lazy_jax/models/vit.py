"""Vision Transformer (Dosovitskiy et al.) with the paper's ReLU MLPs.

Variant strings `<size>/<patch>`: sizes Ti, S, B, L, H (widths/heads/depths/d_ff below) and Mu,
a 128-wide 6-layer model for CPU runs; e.g. `B/16`, `S/4`, `Mu/4`. config.model.width,
num_heads, depth and d_ff override the size's (None = the size's), e.g. `--config.model.d_ff=1024`.
`vit_spec(config.model, num_classes=..., image_shape=...)` checks the config (the patch must tile
the data's images) and gives the `ViTSpec` that `ViT` takes. `apply(variables, batch, train=...)`
takes {'image' [B, height, width, channels], optional 'mask' [B]} and returns (logits [B, C] f32,
{'encoder': per-layer statistics}).
Statistics count every token, the class token included; padded examples (mask 0) never count.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lazy_jax.errors import InputError
from lazy_jax.models import attention, checks, classifier
from lazy_jax.models.attention import SelfAttention
from lazy_jax.models.classifier import layer_norm
from lazy_jax.models.stack import StackSettings, layer_stack
from lazy_jax.sparsity import MlpSettings

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
            **checks.COMMON_DEFAULTS,
            **checks.STACK_DEFAULTS,
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
    dropout_rate: float  # embeddings, attention and the residual branches; the MLPs have none
    mlp: MlpSettings
    stack: StackSettings


def vit_spec(
    config_model,
    *,
    num_classes: int | None = None,
    vocab_size: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> ViTSpec:
    """config.model of a ViT and the data's number of classes -> its spec; checks every model value."""
    del vocab_size  # a classifier has no vocabulary
    preset, patch = checks.variant(config_model, VIT_SIZES)
    checks.patch_fits(config_model, patch, image_shape)
    sizes = checks.sizes(config_model, SIZE_FIELDS, preset)
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
        dtype=checks.dtype(config_model),
        dropout_rate=checks.dropout_rate(config_model),
        mlp=checks.mlp_settings(config_model, {"d_ff": sizes["d_ff"]}, dropout_after_activation=False),
        stack=checks.stack_settings(config_model),
    )


class EncoderLayer(nn.Module):
    """Pre-LN Transformer layer: x + MHSA(LN(x)); x + MLP(LN(x))."""

    spec: ViTSpec
    train: bool
    length: int | None = None  # real tokens, the rest padding (attention.pads_stream); None: all

    @nn.compact
    def __call__(self, x_BTD, mask_BT):
        s = self.spec
        y_BTD = SelfAttention(
            s.num_heads,
            dtype=s.dtype,
            dropout_rate=s.dropout_rate,
            deterministic=not self.train,
            length=self.length,
            name="attention",
        )(layer_norm(s.dtype, "ln_attention")(x_BTD))
        x_BTD = x_BTD + nn.Dropout(s.dropout_rate)(y_BTD, deterministic=not self.train)
        x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))
        y_BTD, stats = s.mlp.block(s.d_ff, s.dtype, name="mlp")(
            layer_norm(s.dtype, "ln_mlp")(x_BTD), mask_BT, train=self.train
        )
        x_BTD = x_BTD + nn.Dropout(s.dropout_rate)(y_BTD, deterministic=not self.train)
        return nn.with_logical_constraint(x_BTD, ("batch", "length", "embed")), stats


class ViT(nn.Module):
    """`ViT(vit_spec(config.model, num_classes=...))`; `models.get_model` builds both."""

    spec: ViTSpec

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        s = self.spec
        x_BTD = classifier.patch_embedding(batch["image"], s.width, s.patch, s.dtype, name="embedding")
        n = x_BTD.shape[0]
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

        t = x_BTD.shape[1]
        mask_BT = jnp.broadcast_to(classifier.example_mask(batch, n)[:, None], (n, t))
        # cuDNN's attention wants an even length: one masked token, added once for all layers (the
        # statistics' mask leaves it out), costs less than padding q/k/v in every layer.
        length = t if attention.pads_stream(s.dtype, t) else None
        if length is not None:
            x_BTD = jnp.pad(x_BTD, ((0, 0), (0, 1), (0, 0)))
            mask_BT = jnp.pad(mask_BT, ((0, 0), (0, 1)))
        layer_kwargs = dict(spec=s, train=train, length=length)
        x_BTD, stats = layer_stack(
            "encoderblock", EncoderLayer, layer_kwargs, s.depth, x_BTD, mask_BT, settings=s.stack
        )
        x_BTD = layer_norm(s.dtype, "encoder_norm")(x_BTD[:, :t])
        x_BD = x_BTD[:, 0] if s.pool == "cls" else jnp.mean(x_BTD, axis=1)
        return classifier.head(x_BD, s.num_classes, s.dtype), {"encoder": stats}
