"""Vision Transformer (Dosovitskiy et al.) with the paper's ReLU MLPs.

Variant strings `<size>/<patch>`: sizes Ti, S, B, L, H (widths/heads/depths/d_ff below) and Mu,
a 128-wide 6-layer model for CPU runs; e.g. `B/16`, `S/4`, `Mu/4`.
`apply(variables, batch, train=...)` takes {'image' [B,H,W,C], optional 'mask' [B]} and returns
(logits [B, classes] f32, {'encoder': per-layer statistics}). Statistics count every token,
the class token included; padded examples (mask 0) never count.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from lazy_jax.models.attention import SelfAttention
from lazy_jax.models.stack import dtype_of, layer_stack
from lazy_jax.sparsity import MlpBlock

# size: (width, heads, depth, d_ff)
VIT_SIZES = {
    "Mu": (128, 4, 6, 512),
    "Ti": (192, 3, 12, 768),
    "S": (384, 6, 12, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 16, 24, 4096),
    "H": (1280, 16, 32, 5120),
}


def parse_variant(variant: str, sizes: dict) -> tuple[tuple, int]:
    """'B/16' -> (sizes['B'], 16), with a clear error for anything else."""
    size, _, patch = str(variant).partition("/")
    if size not in sizes or not patch.isdigit() or int(patch) <= 0:
        raise ValueError(
            f"variant={variant!r} is not allowed; use '<size>/<patch>' with size in "
            f"{list(sizes)} and a positive integer patch, e.g. '{list(sizes)[-3]}/16'"
        )
    return sizes[size], int(patch)


def default_model_config(variant: str = "B/16") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            name="vit",
            variant=variant,
            pool="cls",  # 'cls' (class token) or 'gap' (mean over patches)
            num_classes=-1,  # -1: from the dataset
            dtype="float32",  # activations; parameters stay float32
            activation="relu",
            topk=0,  # Top-k per token in every MLP; 0 = dense
            topk_impl="bisect",  # how the k-th largest is found: 'bisect' or 'lax' (jax.lax.top_k)
            dropout_rate=0.0,
            scan_layers=False,
            remat_policy="none",
            neuron_freq=False,  # per-neuron activation frequency [d_ff] per layer
            count_hist_bins=0,  # histogram of per-token nonzero counts; 0 = off
        )
    )


class EncoderLayer(nn.Module):
    """Pre-LN Transformer layer: x + MHSA(LN(x)); x + MLP(LN(x))."""

    num_heads: int
    mlp: dict
    dropout_rate: float
    deterministic: bool
    dtype: object

    @nn.compact
    def __call__(self, x_BTD, mask_BT):
        ln = lambda name: nn.LayerNorm(
            dtype=self.dtype,
            name=name,
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        )
        y_BTD = SelfAttention(
            self.num_heads,
            dtype=self.dtype,
            dropout_rate=self.dropout_rate,
            deterministic=self.deterministic,
            name="attention",
        )(ln("ln_attention")(x_BTD))
        x_BTD = x_BTD + nn.Dropout(self.dropout_rate)(y_BTD, deterministic=self.deterministic)
        x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))
        y_BTD, stats = MlpBlock(**self.mlp, dtype=self.dtype, name="mlp")(
            ln("ln_mlp")(x_BTD), mask_BT, train=not self.deterministic
        )
        x_BTD = x_BTD + nn.Dropout(self.dropout_rate)(y_BTD, deterministic=self.deterministic)
        return nn.with_logical_constraint(x_BTD, ("batch", "length", "embed")), stats


class ViT(nn.Module):
    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, batch, *, train: bool = False):
        cfg = self.config
        (width, heads, depth, d_ff), patch = parse_variant(cfg.variant, VIT_SIZES)
        if cfg.pool not in ("cls", "gap"):
            raise ValueError(f"pool={cfg.pool!r} is not allowed; use 'cls' or 'gap'")
        dtype = dtype_of(cfg.dtype)
        image_BHWC = batch["image"].astype(dtype)
        n = image_BHWC.shape[0]
        x_BhwD = nn.Conv(
            width,
            (patch, patch),
            strides=(patch, patch),
            padding="VALID",
            dtype=dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, None, None, "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="embedding",
        )(image_BHWC)
        x_BTD = x_BhwD.reshape(n, -1, width)
        if cfg.pool == "cls":
            cls_11D = self.param(
                "cls", nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")), (1, 1, width)
            )
            x_BTD = jnp.concatenate([jnp.broadcast_to(cls_11D, (n, 1, width)).astype(dtype), x_BTD], axis=1)
        posemb_1TD = self.param(
            "pos_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "length", "embed")),
            (1, x_BTD.shape[1], width),
        )
        x_BTD = x_BTD + posemb_1TD.astype(dtype)
        x_BTD = nn.Dropout(cfg.dropout_rate)(x_BTD, deterministic=not train)
        x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "embed"))

        example_mask_B = batch.get("mask", jnp.ones((n,), jnp.float32))
        mask_BT = jnp.broadcast_to(example_mask_B[:, None], x_BTD.shape[:2])
        mlp = dict(
            d_ff=d_ff,
            activation=cfg.activation,
            topk=cfg.topk,
            topk_impl=cfg.topk_impl,
            use_bias=True,
            neuron_freq=cfg.neuron_freq,
            count_hist_bins=cfg.count_hist_bins,
        )
        layer = dict(num_heads=heads, mlp=mlp, dropout_rate=cfg.dropout_rate, deterministic=not train, dtype=dtype)
        x_BTD, stats = layer_stack(
            "encoderblock",
            EncoderLayer,
            layer,
            depth,
            x_BTD,
            mask_BT,
            scan=cfg.scan_layers,
            remat_policy=cfg.remat_policy,
        )
        x_BTD = nn.LayerNorm(
            dtype=dtype,
            name="encoder_norm",
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        )(x_BTD)
        x_BD = x_BTD[:, 0] if cfg.pool == "cls" else jnp.mean(x_BTD, axis=1)
        logits_BC = nn.Dense(
            cfg.num_classes,
            dtype=dtype,
            name="head",
            kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "classes")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("classes",)),
        )(x_BD)
        return logits_BC.astype(jnp.float32), {"encoder": stats}
