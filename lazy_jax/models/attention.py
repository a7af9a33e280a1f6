"""Multi-head self-attention for the vision models (T5 has its own, with relative position bias).

Projections are einsums over [embed, heads, kv] kernels with logical names, so they shard
over heads; the attention itself is `jax.nn.dot_product_attention` (fused where the backend has
a kernel).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class SelfAttention(nn.Module):
    num_heads: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BTD):
        d = x_BTD.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}")
        dh = d // self.num_heads
        param = lambda name, names, shape, fn: self.param(name, nn.with_logical_partitioning(fn, names), shape)
        w_3DHK = param(
            "qkv_kernel",
            (None, "embed", "heads", "kv"),
            (3, d, self.num_heads, dh),
            nn.initializers.xavier_uniform(in_axis=1, out_axis=(2, 3), batch_axis=(0,)),
        )
        b_3HK = param("qkv_bias", (None, "heads", "kv"), (3, self.num_heads, dh), nn.initializers.zeros)
        qkv_3BTHK = jnp.einsum("btd,sdhk->sbthk", x_BTD.astype(self.dtype), w_3DHK.astype(self.dtype))
        qkv_3BTHK = qkv_3BTHK + b_3HK[:, None, None].astype(self.dtype)
        q_BTHK, k_BTHK, v_BTHK = qkv_3BTHK
        q_BTHK = nn.with_logical_constraint(q_BTHK, ("batch", "length", "heads", "kv"))
        o_BTHK = jax.nn.dot_product_attention(q_BTHK, k_BTHK, v_BTHK)
        if self.dropout_rate and not self.deterministic:
            o_BTHK = nn.Dropout(self.dropout_rate)(o_BTHK, deterministic=False)
        w_HKD = param(
            "out_kernel",
            ("heads", "kv", "embed"),
            (self.num_heads, dh, d),
            nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2),
        )
        b_D = param("out_bias", ("embed",), (d,), nn.initializers.zeros)
        y_BTD = jnp.einsum("bthk,hkd->btd", o_BTHK, w_HKD.astype(self.dtype)) + b_D[None, None].astype(self.dtype)
        return y_BTD
