"""Multi-head self-attention for the vision models (T5 has its own, with relative position bias),
and the process-wide attention settings both use.

Projections are einsums over [embed, heads, kv] kernels with logical names, so they shard
over heads; the attention itself is `jax.nn.dot_product_attention`, through XLA or, on a CUDA GPU
with bf16/f16 activations, cuDNN's fused (flash) attention.

`SETTINGS` (changed by `set_attention`, e.g. by `python -m lazy_jax.bench --attention=cudnn`)
decide how attention is computed; they change speed, not the model:
  impl    'auto' (the default: cuDNN's fused attention where it applies, a GPU backend and
          bf16/f16 activations, else XLA; on an H200 it took ViT-B/16's step from 96.9 to 75.9 ms),
          'xla' (the reference) or 'cudnn' (refused on a backend without CUDA). The vision
          models' attention only; T5's attention (relative bias, padding and causal masks) is XLA's.
  relpos  how T5's relative position bias [1, H, T, S] is read from its [buckets, H] table:
          'onehot' (the default: a contraction with the constant one-hot [T, S, buckets], as t5x;
          its gradient is a matmul; 1.1% off T5-Base's step on an H200) or 'gather' (jnp.take; its
          gradient is a scatter-add). Both give the same bias, to the bit.
  logits  T5's attention logits and softmax: 'activation' (the default: in the activation dtype,
          as t5x without float32_logits; on an H200 T5-Base's step fell from 214.8 to 191.1 ms) or
          'float32' (f32 logits, bias and softmax; with f32 activations, as on a CPU, both are f32).
  pad     where cuDNN's even length comes from for an odd token count (ViT's 197): 'stream' (the
          default: the ViT pads its token stream by one masked token once, before the first
          layer, and cuts it after the last) or 'layer' (each attention pads q/k/v and cuts its
          output; on an H200 'stream' took ViT-B/16's step from 72.17 to 70.36 ms). Statistics
          never count the pad token either way.
  qkv     how the vision models project q, k and v from their one [3, D, H, K] kernel: 'split'
          (the default: three einsums, each straight into the [B, T, H, K] layout attention reads)
          or 'fused' (one einsum into [3, B, T, H, K], which XLA writes through a transpose, and
          whose gradient it concatenates; 'split' took ViT-B/16's step from 69.37 to 67.31 ms on an
          H200). The same products either way.
  decode  T5's cached attention while decoding (one query per sequence against the KV cache):
          'auto' (the default: `lazy_jax.decode_attention`'s Pallas kernel on a GPU without a
          mesh of several devices, else XLA), 'xla', or 'pallas' (the kernel; off a GPU in
          Pallas' interpret mode, for tests). Logits and softmax in f32 in the kernel.
What each gave on an H200 is in docs/performance.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lazy_jax.errors import InputError

ATTENTION_CHOICES = {
    "impl": ("auto", "xla", "cudnn"),
    "relpos": ("onehot", "gather"),
    "logits": ("float32", "activation"),
    "pad": ("stream", "layer"),
    "qkv": ("split", "fused"),
    "decode": ("auto", "xla", "pallas"),
}


@dataclasses.dataclass(frozen=True)
class AttentionSettings:
    impl: str = "auto"
    relpos: str = "onehot"
    logits: str = "activation"
    pad: str = "stream"
    qkv: str = "split"
    decode: str = "auto"


SETTINGS = AttentionSettings()


def set_attention(**choices: str) -> AttentionSettings:
    """Changes SETTINGS (for models traced from now on); a bad choice is an InputError naming it."""
    global SETTINGS
    for key, value in choices.items():
        allowed = ATTENTION_CHOICES.get(key)
        if allowed is None:
            raise InputError(f"attention setting {key!r} is unknown; allowed: {sorted(ATTENTION_CHOICES)}")
        if value not in allowed:
            raise InputError(f"attention {key}={value!r} is not allowed; allowed: {list(allowed)}")
    if choices.get("impl") == "cudnn" and jax.default_backend() != "gpu":
        raise InputError(
            f"attention impl='cudnn' needs a CUDA GPU, but the backend is {jax.default_backend()!r}: "
            "use 'auto' or 'xla'"
        )
    SETTINGS = dataclasses.replace(SETTINGS, **choices)
    return SETTINGS


def fused_attention_impl(dtype: Any) -> str:
    """'cudnn' or 'xla': what `jax.nn.dot_product_attention` is asked for, with activations in dtype."""
    if SETTINGS.impl == "xla":
        return "xla"
    cudnn_ok = jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if SETTINGS.impl == "cudnn" and not cudnn_ok:
        raise InputError(f"attention impl='cudnn' needs bf16 or f16 activations on a GPU, got {jnp.dtype(dtype).name}")
    return "cudnn" if cudnn_ok else "xla"


def pads_stream(dtype: Any, length: int) -> bool:
    """Whether a vision model pads its token stream of `length` tokens by one (see `attend`)."""
    return length % 2 == 1 and SETTINGS.pad == "stream" and fused_attention_impl(dtype) == "cudnn"


def attend(q_BTHK, k_BTHK, v_BTHK, impl: str, *, pad_odd: bool | None = None, length: int | None = None):
    """Softmax attention, default scale, through `jax.nn.dot_product_attention` with `impl`.

    jax 0.11's cuDNN path refuses to train on an odd length ("Unsupported sequence length Q 197,
    KV 197" on an H200, for ViT-B/16's 197 tokens: it takes its empty bias placeholder for a bias),
    so an odd length is padded by one token that the sequence lengths mask out, and the output is
    cut back. `pad_odd` (default: impl == 'cudnn') lets the tests run that path through XLA.
    `length`: only the first `length` tokens are real (the caller padded the rest, see
    `pads_stream`); the others are masked out as keys and their outputs are not to be used.
    """
    b, t = q_BTHK.shape[:2]
    if length is None and (impl == "cudnn" if pad_odd is None else pad_odd) and t % 2:
        widths = ((0, 0), (0, 1), (0, 0), (0, 0))
        padded = (jnp.pad(x, widths) for x in (q_BTHK, k_BTHK, v_BTHK))
        return attend(*padded, impl, length=t)[:, :t]
    if length is not None and length < t:
        lengths_B = jnp.full((b,), length, jnp.int32)
        return jax.nn.dot_product_attention(
            q_BTHK,
            k_BTHK,
            v_BTHK,
            query_seq_lengths=lengths_B,
            key_value_seq_lengths=lengths_B,
            implementation=impl,
        )
    return jax.nn.dot_product_attention(q_BTHK, k_BTHK, v_BTHK, implementation=impl)


class SelfAttention(nn.Module):
    num_heads: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    deterministic: bool = True
    length: int | None = None  # tokens that are real (None: all); the rest padding (`pads_stream`)

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
        x_BTD, w_3DHK, b_3HK = (a.astype(self.dtype) for a in (x_BTD, w_3DHK, b_3HK))
        if SETTINGS.qkv == "split":
            q_BTHK, k_BTHK, v_BTHK = (
                jnp.einsum("btd,dhk->bthk", x_BTD, w_3DHK[i]) + b_3HK[i][None, None] for i in range(3)
            )
        else:
            q_BTHK, k_BTHK, v_BTHK = jnp.einsum("btd,sdhk->sbthk", x_BTD, w_3DHK) + b_3HK[:, None, None]
        q_BTHK = nn.with_logical_constraint(q_BTHK, ("batch", "length", "heads", "kv"))
        o_BTHK = attend(q_BTHK, k_BTHK, v_BTHK, fused_attention_impl(q_BTHK.dtype), length=self.length)
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
